#!/usr/bin/env node
// Usage: node verify-range.mjs FILE.car ROOT_CID OFFSET LENGTH EXPECTED_BYTES_FILE
//
// Independently checks a trustless-gateway `entity-bytes` CAR: from a blockstore that holds ONLY the
// CAR's blocks (each one's hash checked against its CID first), ipfs-unixfs-exporter reads LENGTH bytes
// at OFFSET of the file under ROOT_CID, and they must equal EXPECTED_BYTES_FILE (those bytes alone).
// A block the read needs and the CAR lacks is "missing block <cid>". The CAR header must name ROOT_CID
// as its one root. Prints "ok: <N> blocks <LENGTH> bytes" and exits 0, or one "error: ..." line and 1.

import fs from 'node:fs'
import { exporter } from 'ipfs-unixfs-exporter'
import { CID } from 'multiformats/cid'
import { CarBlockstore, openCar, checkBlockHash, runMain, VerifyError, UsageError } from './lib.mjs'

async function main () {
  const args = process.argv.slice(2)
  if (args.length !== 5) throw new UsageError('usage: node verify-range.mjs FILE.car ROOT_CID OFFSET LENGTH EXPECTED')
  const [carPath, rootText, offText, lenText, expectedPath] = args
  const root = CID.parse(rootText)
  const offset = Number(offText)
  const length = Number(lenText)
  const expected = await fs.promises.readFile(expectedPath)
  const car = await openCar(carPath)
  try {
    if (car.roots.length !== 1 || !car.roots[0].equals(root)) {
      throw new VerifyError(`CAR roots ${car.roots.join(',')} are not [${root}]`)
    }
    for (const e of car.entries) await checkBlockHash(e.cid, await car.readBlock(e))
    const entry = await exporter(root, new CarBlockstore(car))
    const parts = []
    for await (const chunk of entry.content({ offset, length })) parts.push(Buffer.from(chunk))
    const got = Buffer.concat(parts)
    if (got.length !== expected.length) throw new VerifyError(`read ${got.length} bytes, expected ${expected.length}`)
    if (Buffer.compare(got, expected) !== 0) throw new VerifyError('range content differs')
    process.stdout.write(`ok: ${car.entries.length} blocks ${got.length} bytes\n`)
    return 0
  } finally {
    await car.close()
  }
}

runMain(main)
