#!/usr/bin/env node
// Usage: node car-mutate.mjs flip|drop|extra IN.car OUT.car
//
// Makes a deliberately broken copy of a CAR, for negative tests of
// verify-car.mjs (selftest.sh uses it; the project's tests may too):
//   flip   XOR one byte in the middle of the first raw (leaf) block's data;
//          CAR framing is untouched             -> "tampered block <cid>"
//   drop   rewrite the CAR without the first raw leaf block that is not the
//          root                                 -> "missing block <cid>"
//   extra  rewrite the CAR with one unrelated raw block appended, addressed
//          with the root's hash function       -> "extra block <cid>"
// Prints the CID of the affected block.

import fs from 'node:fs'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { CarWriter } from '@ipld/car/writer'
import { CID } from 'multiformats/cid'
import { openCar, HASHERS, runMain, UsageError, RAW } from './lib.mjs'

async function writeCar (outPath, roots, blocks) {
  const { writer, out } = CarWriter.create(roots)
  const ws = fs.createWriteStream(outPath)
  const pump = (async () => {
    for await (const chunk of out) {
      if (!ws.write(chunk)) await once(ws, 'drain')
    }
    ws.end()
    await once(ws, 'finish')
  })()
  for await (const b of blocks) await writer.put(b)
  await writer.close()
  await pump
}

async function main () {
  const [mode, inPath, outPath, ...rest] = process.argv.slice(2)
  if (!['flip', 'drop', 'extra'].includes(mode) || outPath == null || rest.length > 0) {
    throw new UsageError('usage: node car-mutate.mjs flip|drop|extra IN.car OUT.car')
  }
  const car = await openCar(inPath)
  try {
    const rootKey = car.roots[0]?.toString()
    const leaf = car.entries.find((e) => e.cid.code === RAW && e.blockLength > 0 && e.cid.toString() !== rootKey) ??
      car.entries.find((e) => e.cid.code === RAW && e.blockLength > 0)
    if (mode === 'flip') {
      if (leaf == null) throw new Error('no non-empty raw block to flip')
      await fs.promises.copyFile(inPath, outPath)
      const fh = await fs.promises.open(outPath, 'r+')
      const pos = leaf.blockOffset + Math.floor(leaf.blockLength / 2)
      const b = Buffer.alloc(1)
      await fh.read(b, 0, 1, pos)
      b[0] ^= 0x01
      await fh.write(b, 0, 1, pos)
      await fh.close()
      process.stdout.write(`${leaf.cid}\n`)
      return 0
    }
    async function * blocks (skip) {
      for (const e of car.entries) {
        if (e === skip) continue
        yield { cid: e.cid, bytes: await car.readBlock(e) }
      }
    }
    if (mode === 'drop') {
      if (leaf == null || leaf.cid.toString() === rootKey) throw new Error('no non-root raw block to drop')
      await writeCar(outPath, car.roots, blocks(leaf))
      process.stdout.write(`${leaf.cid}\n`)
      return 0
    }
    // extra
    const hasher = HASHERS.get(car.roots[0].multihash.code)
    const bytes = randomBytes(1000)
    const cid = CID.createV1(RAW, await hasher.digest(bytes))
    await writeCar(outPath, car.roots, (async function * () {
      yield * blocks(null)
      yield { cid, bytes }
    })())
    process.stdout.write(`${cid}\n`)
    return 0
  } finally {
    await car.close()
  }
}

runMain(main)
