#!/usr/bin/env node
// Usage: node verify-car.mjs FILE.car EXPECTED_BYTES_FILE [--allow-duplicates]
//
// Independently verifies that FILE.car is a complete, minimal, untampered
// UnixFS file DAG whose content equals EXPECTED_BYTES_FILE:
//   1. the CAR header has exactly one root;
//   2. every block's bytes hash to its CID (BLAKE3 0x1e or sha2-256 0x12; any
//      other multihash code is an error) -> "tampered block <cid>";
//   3. every block reachable from the root (walking dag-pb links) is present
//      -> "missing block <cid>";
//   4. no block is unreachable from the root -> "extra block <cid>";
//      a CID stored twice -> "duplicate block <cid>" (unless --allow-duplicates);
//   5. UnixFS consistency of every dag-pb node: type file, one blocksize per
//      link, blocksizes[i] == child's content length, filesize == sum, link
//      Tsize == child's cumulative DAG size;
//   6. the root exported by ipfs-unixfs-exporter (from a blockstore holding
//      only the CAR's blocks) streams exactly the bytes of EXPECTED_BYTES_FILE.
// Prints "ok: <root cid> <N> blocks <size> bytes" (N = distinct blocks) and
// exits 0, or prints one "error: ..." line on stderr and exits 1 (2 on usage).

import fs from 'node:fs'
import { exporter } from 'ipfs-unixfs-exporter'
import { UnixFS } from 'ipfs-unixfs'
import {
  CarBlockstore, openCar, checkBlockHash, decodePb, decodeUnixfs, runMain,
  VerifyError, UsageError, RAW, DAG_PB, codecName
} from './lib.mjs'

async function main () {
  const args = process.argv.slice(2)
  const allowDup = args.includes('--allow-duplicates')
  const pos = args.filter((a) => !a.startsWith('--'))
  if (pos.length !== 2 || args.length - pos.length !== (allowDup ? 1 : 0)) {
    throw new UsageError('usage: node verify-car.mjs FILE.car EXPECTED_BYTES_FILE [--allow-duplicates]')
  }
  const [carPath, expectedPath] = pos
  const expectedSize = BigInt((await fs.promises.stat(expectedPath)).size)

  const car = await openCar(carPath)
  try {
    // 1. exactly one root
    if (car.roots.length !== 1) {
      throw new VerifyError(`CAR must have exactly one root, has ${car.roots.length}`)
    }
    const root = car.roots[0]

    // 2. hash every block (the exporter does not), in file order
    const seen = new Set()
    for (const e of car.entries) {
      const k = e.cid.toString()
      if (seen.has(k) && !allowDup) throw new VerifyError(`duplicate block ${e.cid}`)
      seen.add(k)
      if (e.cid.code !== RAW && e.cid.code !== DAG_PB) {
        throw new VerifyError(`unsupported codec ${codecName(e.cid.code)} in block ${e.cid}`)
      }
      await checkBlockHash(e.cid, await car.readBlock(e))
    }

    // 3. reachability from the root; 5. UnixFS consistency (memoised, post-order)
    const reached = new Map() // cid string -> { content: bigint, dag: bigint }
    async function visit (cid, path) {
      const k = cid.toString()
      const memo = reached.get(k)
      if (memo) return memo
      const e = car.byKey.get(k)
      if (e == null) throw new VerifyError(`missing block ${cid}`)
      if (cid.code === RAW) {
        const r = { content: BigInt(e.blockLength), dag: BigInt(e.blockLength) }
        reached.set(k, r)
        return r
      }
      if (cid.code !== DAG_PB) throw new VerifyError(`unsupported codec ${codecName(cid.code)} in block ${cid}`)
      if (path.includes(k)) throw new VerifyError(`cycle at block ${cid}`)
      const node = decodePb(cid, await car.readBlock(e))
      if (node.Data == null) throw new VerifyError(`dag-pb block ${cid} has no UnixFS Data`)
      let fsn
      try {
        fsn = decodeUnixfs(node.Data)
        UnixFS.unmarshal(node.Data) // must also be acceptable to ipfs-unixfs
      } catch (err) {
        throw new VerifyError(`bad UnixFS data in block ${cid}: ${err.message}`)
      }
      if (fsn.type !== 'file') throw new VerifyError(`block ${cid} is UnixFS ${fsn.type ?? '(no type)'}, expected file`)
      if (node.Links.length !== fsn.blocksizes.length) {
        throw new VerifyError(`block ${cid} has ${node.Links.length} links but ${fsn.blocksizes.length} blocksizes`)
      }
      let content = BigInt(fsn.data?.length ?? 0)
      let dag = BigInt(e.blockLength)
      for (let i = 0; i < node.Links.length; i++) {
        const link = node.Links[i]
        const child = await visit(link.Hash, [...path, k])
        if (child.content !== fsn.blocksizes[i]) {
          throw new VerifyError(`block ${cid} link ${i}: blocksize ${fsn.blocksizes[i]} but child ${link.Hash} holds ${child.content} bytes`)
        }
        if (link.Tsize == null || BigInt(link.Tsize) !== child.dag) {
          throw new VerifyError(`block ${cid} link ${i}: Tsize ${link.Tsize} but child ${link.Hash} DAG size is ${child.dag}`)
        }
        content += child.content
        dag += child.dag
      }
      if (fsn.filesize !== content) {
        throw new VerifyError(`block ${cid}: filesize ${fsn.filesize} but content is ${content} bytes`)
      }
      const r = { content, dag }
      reached.set(k, r)
      return r
    }
    const rootInfo = await visit(root, [])

    // 4. extra blocks
    for (const e of car.entries) {
      if (!reached.has(e.cid.toString())) throw new VerifyError(`extra block ${e.cid}`)
    }

    if (rootInfo.content !== expectedSize) {
      throw new VerifyError(`size mismatch: DAG holds ${rootInfo.content} bytes, expected file has ${expectedSize}`)
    }

    // 6. export and compare byte for byte, streaming
    const entry = await exporter(root, new CarBlockstore(car))
    if (entry.type !== 'file' && entry.type !== 'raw') {
      throw new VerifyError(`root ${root} exports as ${entry.type}, expected a file`)
    }
    if (BigInt(entry.size) !== expectedSize) {
      throw new VerifyError(`size mismatch: exporter reports ${entry.size} bytes, expected file has ${expectedSize}`)
    }
    const fh = await fs.promises.open(expectedPath, 'r')
    let off = 0
    try {
      let want = Buffer.alloc(0)
      for await (const chunk of entry.content()) {
        if (want.length < chunk.length) want = Buffer.alloc(chunk.length)
        let got = 0
        while (got < chunk.length) {
          const { bytesRead } = await fh.read(want, got, chunk.length - got, off + got)
          if (bytesRead === 0) break
          got += bytesRead
        }
        if (got < chunk.length) {
          throw new VerifyError(`content mismatch: exported content is longer than expected file (${off + got} bytes)`)
        }
        if (Buffer.compare(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length), want.subarray(0, chunk.length)) !== 0) {
          let i = 0
          while (chunk[i] === want[i]) i++
          throw new VerifyError(`content mismatch at byte offset ${off + i}`)
        }
        off += chunk.length
      }
    } finally {
      await fh.close()
    }
    if (BigInt(off) !== expectedSize) {
      throw new VerifyError(`content mismatch: exported ${off} bytes, expected file has ${expectedSize}`)
    }

    process.stdout.write(`ok: ${root} ${reached.size} blocks ${off} bytes\n`)
    return 0
  } finally {
    await car.close()
  }
}

runMain(main)
