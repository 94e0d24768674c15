#!/usr/bin/env node
// Usage: node layout.mjs FILE.car
//
// Prints a canonical, hash-function-independent description of the DAG shape
// under the CAR's (single) root: one line per block occurrence, depth-first
// (pre-order, links in order), never mentioning CIDs or digests:
//
//   <depth> raw len=<block bytes>
//   <depth> dag-pb len=<block bytes> pb=<dag-pb wire fields> unixfs=<type>
//       filesize=<n|-> blocksizes=[a,b,...] data=<len|-> [mode=..] [mtime]
//       [hashType=..] [fanout=..] wire=<UnixFS wire fields>
//       links=[<Tsize>:<Name as JSON, or - if absent>,...]
//
// (the dag-pb line is a single line). Two CARs of the same file with the same
// chunking and layout but different hash functions (e.g. nixdag's BLAKE3 CAR
// and `ipfs-car pack --no-wrap` sha2-256 output) must print identical text,
// since CIDv1 with a 32-byte digest has the same length for both hashes.
// Blocks are read from the CAR on demand; leaf bytes are never loaded.

import {
  openCar, decodePb, decodeUnixfs, wireFields, runMain,
  VerifyError, UsageError, RAW, DAG_PB, codecName
} from './lib.mjs'

async function main () {
  const args = process.argv.slice(2)
  if (args.length !== 1) throw new UsageError('usage: node layout.mjs FILE.car')
  const car = await openCar(args[0])
  try {
    if (car.roots.length !== 1) {
      throw new VerifyError(`CAR must have exactly one root, has ${car.roots.length}`)
    }
    const out = []
    // explicit stack instead of recursion; push children in reverse order
    const stack = [{ cid: car.roots[0], depth: 0 }]
    while (stack.length > 0) {
      const { cid, depth } = stack.pop()
      const e = car.byKey.get(cid.toString())
      if (e == null) throw new VerifyError(`missing block ${cid}`)
      if (cid.code === RAW) {
        out.push(`${depth} raw len=${e.blockLength}`)
        continue
      }
      if (cid.code !== DAG_PB) throw new VerifyError(`unsupported codec ${codecName(cid.code)} in block ${cid}`)
      const bytes = await car.readBlock(e)
      const node = decodePb(cid, bytes)
      const parts = [`${depth} dag-pb len=${e.blockLength} pb=${wireFields(bytes)}`]
      if (node.Data == null) {
        parts.push('unixfs=-')
      } else {
        let u
        try {
          u = decodeUnixfs(node.Data)
        } catch (err) {
          throw new VerifyError(`bad UnixFS data in block ${cid}: ${err.message}`)
        }
        parts.push(`unixfs=${u.type ?? '-'}`)
        parts.push(`filesize=${u.filesize ?? '-'}`)
        parts.push(`blocksizes=[${u.blocksizes.join(',')}]`)
        parts.push(`data=${u.data == null ? '-' : u.data.length}`)
        if (u.mode != null) parts.push(`mode=${u.mode.toString(8)}`)
        if (u.mtime != null) parts.push(`mtime=${u.mtime.length}B`)
        if (u.hashType != null) parts.push(`hashType=${u.hashType}`)
        if (u.fanout != null) parts.push(`fanout=${u.fanout}`)
        parts.push(`wire=${u.wire}`)
      }
      const links = node.Links.map((l) => `${l.Tsize ?? '-'}:${l.Name == null ? '-' : JSON.stringify(l.Name)}`)
      parts.push(`links=[${links.join(',')}]`)
      out.push(parts.join(' '))
      for (let i = node.Links.length - 1; i >= 0; i--) {
        stack.push({ cid: node.Links[i].Hash, depth: depth + 1 })
      }
      if (out.length > 10_000_000) throw new VerifyError('DAG too large to describe')
    }
    process.stdout.write(out.join('\n') + '\n')
    return 0
  } finally {
    await car.close()
  }
}

runMain(main)
