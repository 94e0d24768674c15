// Render nixdag's HTML report (dedup-stats --html, GET /stats) in headless Chromium and judge it:
//   node check-report.mjs URL ARTIFACT_DIR NAME
// URL is the page (http://127.0.0.1:…/stats or file:///…/report.html). For a desktop and a phone
// viewport it checks that
//   - nothing is logged as an error (console errors, uncaught exceptions, CSP refusals),
//   - no request leaves the page: every request but the page's own fails the check,
//   - every chart's <svg class="chart"> is in the DOM, drawn, and holds shapes,
//   - the page is not wider than the viewport (no horizontal scrolling on a phone),
//   - the full-page screenshot is not blank (its PNG is decoded here: more than a few colours, and a
//     share of pixels that are not white); it is kept as ARTIFACT_DIR/NAME-VIEWPORT.png.
// Prints one JSON object; exits 0 only if every check held. Chromium is Debian's (/usr/bin/chromium,
// or $CHROMIUM): playwright-core downloads no browser.

import { chromium } from 'playwright-core';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';

const CHARTS = [
  'chart-timeline',
  'chart-sharing',
  'chart-versions',
  'chart-block-size',
  'chart-reference-count',
  'chart-stored-form',
];
const VIEWPORTS = [
  { name: 'desktop', viewport: { width: 1280, height: 900 }, isMobile: false },
  { name: 'phone', viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true },
];

/** Decode an 8-bit, non-interlaced PNG (what Chromium writes) to { width, height, channels, pixels }. */
function decodePng(buf) {
  const sig = '89504e470d0a1a0a';
  if (buf.subarray(0, 8).toString('hex') !== sig) throw new Error('not a PNG');
  let pos = 8;
  let width = 0, height = 0, depth = 0, colour = 0, interlace = 0;
  const idat = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.subarray(pos + 4, pos + 8).toString('latin1');
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      depth = data[8];
      colour = data[9];
      interlace = data[12];
    } else if (type === 'IDAT') {
      idat.push(data);
    } else if (type === 'IEND') {
      break;
    }
    pos += 12 + len;
  }
  const channels = { 0: 1, 2: 3, 4: 2, 6: 4 }[colour];
  if (depth !== 8 || !channels || interlace !== 0) {
    throw new Error(`unsupported PNG: depth ${depth}, colour type ${colour}, interlace ${interlace}`);
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const pixels = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    const out = pixels.subarray(y * stride, (y + 1) * stride);
    const prev = y > 0 ? pixels.subarray((y - 1) * stride, y * stride) : Buffer.alloc(stride);
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? out[x - channels] : 0;
      const b = prev[x];
      const c = x >= channels ? prev[x - channels] : 0;
      let v = line[x];
      switch (filter) {
        case 0: break;
        case 1: v += a; break;
        case 2: v += b; break;
        case 3: v += (a + b) >> 1; break;
        case 4: {
          const p = a + b - c;
          const pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
          v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
          break;
        }
        default: throw new Error(`bad PNG filter ${filter}`);
      }
      out[x] = v & 0xff;
    }
  }
  return { width, height, channels, pixels };
}

/** Distinct colours (counted up to 10 000) and the share of pixels that are not white. */
function pixelVariety(png) {
  const seen = new Set();
  let notWhite = 0;
  const n = png.width * png.height;
  for (let i = 0; i < n; i++) {
    const o = i * png.channels;
    const rgb = png.channels >= 3
      ? (png.pixels[o] << 16) | (png.pixels[o + 1] << 8) | png.pixels[o + 2]
      : png.pixels[o] * 0x010101;
    if (seen.size < 10000) seen.add(rgb);
    if (rgb !== 0xffffff) notWhite++;
  }
  return { colours: seen.size, notWhiteShare: n ? notWhite / n : 0 };
}

const [url, artifacts, name] = process.argv.slice(2);
if (!url || !artifacts || !name) {
  console.error('usage: node check-report.mjs URL ARTIFACT_DIR NAME');
  process.exit(2);
}
mkdirSync(artifacts, { recursive: true });

const result = { url, ok: true, failures: [], viewports: [] };
const fail = (why) => {
  result.ok = false;
  result.failures.push(why);
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
try {
  for (const vp of VIEWPORTS) {
    const context = await browser.newContext({
      viewport: vp.viewport,
      isMobile: vp.isMobile,
      hasTouch: vp.hasTouch ?? false,
      deviceScaleFactor: 1,
    });
    const page = await context.newPage();
    const seen = { name: vp.name, requests: [], errors: [] };
    page.on('console', (m) => {
      if (m.type() === 'error') seen.errors.push(`console: ${m.text()}`);
    });
    page.on('pageerror', (e) => seen.errors.push(`pageerror: ${e.message}`));
    page.on('request', (r) => {
      seen.requests.push(r.url());
      if (r.url() !== url) fail(`${vp.name}: the page requested ${r.url()}`);
    });
    const response = await page.goto(url, { waitUntil: 'load' });
    if (response && !response.ok()) fail(`${vp.name}: ${url} answered ${response.status()}`);
    // Let anything deferred (there should be nothing) happen before judging.
    await page.waitForTimeout(300);
    const dom = await page.evaluate((ids) => {
      const charts = {};
      for (const id of ids) {
        const el = document.querySelector(`svg#${id}.chart`);
        if (!el) {
          charts[id] = null;
          continue;
        }
        const box = el.getBoundingClientRect();
        charts[id] = {
          width: box.width,
          height: box.height,
          shapes: el.querySelectorAll('rect, line, polyline, polygon, text').length,
        };
      }
      return {
        charts,
        scrollWidth: document.documentElement.scrollWidth,
        innerWidth: window.innerWidth,
        title: document.title,
        tables: document.querySelectorAll('table').length,
      };
    }, CHARTS);
    seen.dom = dom;
    for (const id of CHARTS) {
      const c = dom.charts[id];
      if (!c) fail(`${vp.name}: no <svg id="${id}" class="chart">`);
      else if (!(c.width > 0 && c.height > 0)) fail(`${vp.name}: ${id} is not drawn (${c.width}×${c.height})`);
      else if (c.shapes < 1) fail(`${vp.name}: ${id} holds no shape`);
    }
    // On a phone the layout viewport widens to wide content (innerWidth grows with it), so the
    // page is also held to the width the viewport was opened with.
    const width = Math.min(dom.innerWidth, vp.viewport.width);
    if (dom.scrollWidth > width) {
      fail(`${vp.name}: the page is wider than the viewport (${dom.scrollWidth} > ${width})`);
    }
    const png = await page.screenshot({ fullPage: true });
    const file = join(artifacts, `${name}-${vp.name}.png`);
    writeFileSync(file, png);
    const variety = pixelVariety(decodePng(png));
    seen.screenshot = { file, ...variety };
    if (variety.colours < 8 || variety.notWhiteShare < 0.01) {
      fail(`${vp.name}: the screenshot looks blank (${variety.colours} colours, ${(variety.notWhiteShare * 100).toFixed(2)} % not white)`);
    }
    for (const e of seen.errors) fail(`${vp.name}: ${e}`);
    if (!seen.requests.includes(url)) fail(`${vp.name}: the page itself was never requested`);
    result.viewports.push(seen);
    await context.close();
  }
} catch (e) {
  fail(`exception: ${e.stack || e}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result, null, 1));
process.exit(result.ok ? 0 : 1);
