#!/usr/bin/env node
// Usage: node helia-fetch.mjs GATEWAY_URL CID OUT_FILE [FROM-TO]
//
// A stock IPFS client, not ours: @helia/verified-fetch on a Helia node built with @helia/http,
// configured with GATEWAY_URL as its only trustless gateway (no delegated routers, no public gateways,
// no libp2p), and a BLAKE3 hasher (@noble/hashes wrapped by multiformats' hasher.from, code 0x1e).
// Fetches ipfs://CID (with `Range: bytes=FROM-TO` when given) and writes what it received to OUT_FILE,
// also when the body fails part-way, so the caller can check no wrong byte was accepted.
// Every HTTP request goes through globalThis.fetch, which is wrapped to refuse any host but loopback.
// Prints "ok: <status> <bytes>" and exits 0, or one "error: ..." line and exits 1.

import fs from 'node:fs'
import { withHTTP } from '@helia/http'
import { createVerifiedFetch } from '@helia/verified-fetch'
import { blake3 } from '@noble/hashes/blake3.js'
import { createHeliaLight } from 'helia'
import { from as hasherFrom } from 'multiformats/hashes/hasher'
import { runMain, UsageError, VerifyError } from './lib.mjs'

const blake3Hasher = hasherFrom({ name: 'blake3', code: 0x1e, encode: (b) => blake3(b) })

const realFetch = globalThis.fetch
globalThis.fetch = (input, init) => {
  const url = new URL(typeof input === 'string' || input instanceof URL ? input : input.url)
  if (url.hostname !== '127.0.0.1' && url.hostname !== 'localhost' && url.hostname !== '[::1]') {
    return Promise.reject(new Error(`non-loopback request refused: ${url}`))
  }
  return realFetch(input, init)
}

// A fetch whose promise never settles (the client gave up on every provider without rejecting) ends
// with an empty event loop: that is a failure too, never a success.
let finished = false
process.on('exit', (code) => {
  if (!finished && code === 0) {
    process.stderr.write('error: the fetch never completed (no provider gave a block that verified)\n')
    process.exitCode = 1
  }
})

async function main () {
  const args = process.argv.slice(2)
  if (args.length < 3 || args.length > 4) throw new UsageError('usage: node helia-fetch.mjs GATEWAY CID OUT [FROM-TO]')
  const [gateway, cid, outPath, range] = args
  // helia 7.1.15's routing waits forever when no non-fallback router exists (its merge of router
  // streams never goes idle), so one router that knows no providers stands in for delegated routing:
  // the gateway below, added as the fallback router, is then the only provider ever asked.
  const noRouting = { name: 'no-routing', async * findProviders () {} }
  const helia = await withHTTP(createHeliaLight({ hashers: [blake3Hasher], routers: [noRouting] }), {
    delegatedRouters: [],
    recursiveGateways: [gateway],
    allowLocal: true,
    allowInsecure: true
  }).start()
  const vfetch = await createVerifiedFetch(helia)
  const out = fs.createWriteStream(outPath)
  let n = 0
  try {
    const headers = range == null ? {} : { Range: `bytes=${range}` }
    const res = await vfetch(`ipfs://${cid}`, { headers, signal: AbortSignal.timeout(60_000) })
    if (res.status !== 200 && res.status !== 206) throw new VerifyError(`status ${res.status}: ${await res.text()}`)
    for await (const chunk of res.body) {
      n += chunk.length
      if (!out.write(chunk)) await new Promise((resolve) => out.once('drain', resolve))
    }
    process.stdout.write(`ok: ${res.status} ${n}\n`)
    finished = true
    return 0
  } catch (err) {
    finished = true
    throw err
  } finally {
    await new Promise((resolve) => out.end(resolve))
    await vfetch.stop()
    await helia.stop()
  }
}

runMain(main)
