#!/usr/bin/env node
// Usage: node resolve-snapshot.mjs FILE.car SNAPSHOT_CID STORE_PATH_HASH OUT_FILE
//
// Resolves a store path from a nixdag catalogue snapshot (docs/IPFS.md, "The catalogue") using only
// the blocks of one CAR, each hashed against its CID first: the snapshot's root node (dag-cbor) →
// its `paths` map, descending `shards` by the hash part's next character until a node with `entries`
// → the entry for STORE_PATH_HASH → its `Root` link → the NAR's bytes (ipfs-unixfs-exporter), written
// to OUT_FILE. The CAR header must name SNAPSHOT_CID as its one root. Prints "ok: <StorePath>
// <NarHash> <NarSize> <root>" and exits 0, or one "error: ..." line and 1.

import fs from 'node:fs'
import * as dagCbor from '@ipld/dag-cbor'
import { exporter } from 'ipfs-unixfs-exporter'
import { CID } from 'multiformats/cid'
import { CarBlockstore, openCar, checkBlockHash, runMain, VerifyError, UsageError } from './lib.mjs'

async function main () {
  const args = process.argv.slice(2)
  if (args.length !== 4) throw new UsageError('usage: node resolve-snapshot.mjs FILE.car SNAPSHOT_CID HASH_PART OUT')
  const [carPath, rootText, hashPart, outPath] = args
  const root = CID.parse(rootText)
  const car = await openCar(carPath)
  try {
    if (car.roots.length !== 1 || !car.roots[0].equals(root)) {
      throw new VerifyError(`CAR roots ${car.roots.join(',')} are not [${root}]`)
    }
    for (const e of car.entries) await checkBlockHash(e.cid, await car.readBlock(e))
    const store = new CarBlockstore(car)
    const node = async (cid) => {
      if (cid.code !== dagCbor.code) throw new VerifyError(`${cid} is not dag-cbor`)
      const parts = []
      for await (const b of store.get(cid)) parts.push(b)
      return dagCbor.decode(Buffer.concat(parts))
    }
    const top = await node(root)
    if (top.catalogue !== 'nixdag-catalogue/1') throw new VerifyError(`not a nixdag catalogue: ${top.catalogue}`)
    let map = await node(top.paths)
    let depth = 0
    while (map.entries == null) {
      const next = map.shards?.[hashPart[depth]]
      if (next == null) throw new VerifyError(`${hashPart} is not in the catalogue`)
      map = await node(next)
      depth++
    }
    const entry = map.entries[hashPart]
    if (entry == null) throw new VerifyError(`${hashPart} is not in the catalogue`)
    if (!entry.StorePath.includes(`/${hashPart}-`)) throw new VerifyError(`entry names ${entry.StorePath}`)
    const file = await exporter(entry.Root, store)
    const parts = []
    for await (const chunk of file.content()) parts.push(Buffer.from(chunk))
    const nar = Buffer.concat(parts)
    if (nar.length !== entry.NarSize) throw new VerifyError(`NAR is ${nar.length} bytes, the entry says ${entry.NarSize}`)
    await fs.promises.writeFile(outPath, nar)
    process.stdout.write(`ok: ${entry.StorePath} ${entry.NarHash} ${entry.NarSize} ${entry.Root} depth=${depth}\n`)
    return 0
  } finally {
    await car.close()
  }
}

runMain(main)
