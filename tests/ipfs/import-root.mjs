#!/usr/bin/env node
// Usage: node import-root.mjs FILE CHUNK_SIZES_FILE [--hash blake3|sha256] [--car OUT.car]
//
// Imports FILE with ipfs-unixfs-importer, cut into exactly the chunks listed
// in CHUNK_SIZES_FILE (decimal byte lengths, one per line, summing to the file
// size; blank lines ignored), with
//   rawLeaves: true, cidVersion: 1, reduceSingleLeafToSelf: true,
//   layout: balanced({ maxChildrenPerNode: 174 })
// and prints the root CID (CIDv1, base32: bafk... for a single raw leaf,
// bafy... for a dag-pb root). Default hash: blake3.
//
// FILE is streamed, never held in memory; blocks are not stored, except that
// with --car OUT.car every distinct block is also written to a CARv1 whose
// single root is the printed CID (a reference CAR to compare nixdag's with).
//
// How BLAKE3 is applied: ipfs-unixfs-importer >= 13 hard-codes sha2-256 (its
// `hasher` option was removed), so the importer builds the DAG with sha2-256
// CIDs and the blockstore it writes to re-addresses every block with the
// BLAKE3 hasher (multiformats/hashes/hasher `from({ name: 'blake3', code:
// 0x1e, ... })`) as it arrives. Blocks arrive children-first, so each dag-pb
// node's link CIDs are replaced by the BLAKE3 CIDs of its children and the
// node is re-encoded with @ipld/dag-pb. CIDv1 sha2-256 and BLAKE3-256 CIDs have
// the same length, so block sizes, Tsizes and the layout are unchanged (this
// is asserted). Everything about the DAG shape and encoding is decided by the
// importer; only the hash function differs.

import fs from 'node:fs'
import { once } from 'node:events'
import { CarWriter } from '@ipld/car/writer'
import * as dagPb from '@ipld/dag-pb'
import { importer } from 'ipfs-unixfs-importer'
import { balanced } from 'ipfs-unixfs-importer/layout'
import { CID } from 'multiformats/cid'
import { sha256 } from 'multiformats/hashes/sha2'
import { blake3Hasher, runMain, UsageError, RAW, DAG_PB } from './lib.mjs'

const MAX_CHILDREN = 174
// any CIDv1 with a 32-byte digest: same encoded length as the real root
const PLACEHOLDER_ROOT = CID.parse('bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi')

function parseArgs (argv) {
  const pos = []
  let hash = 'blake3'
  let car = null
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--hash') {
      hash = argv[++i]
    } else if (a.startsWith('--hash=')) {
      hash = a.slice('--hash='.length)
    } else if (a === '--car') {
      car = argv[++i]
      if (car == null) throw new UsageError('--car needs a file name')
    } else if (a.startsWith('--')) {
      throw new UsageError(`unknown option ${a}`)
    } else {
      pos.push(a)
    }
  }
  if (pos.length !== 2 || (hash !== 'blake3' && hash !== 'sha256')) {
    throw new UsageError('usage: node import-root.mjs FILE CHUNK_SIZES_FILE [--hash blake3|sha256] [--car OUT.car]')
  }
  return { file: pos[0], sizesFile: pos[1], hash, car }
}

function readSizes (path) {
  const sizes = []
  const lines = fs.readFileSync(path, 'utf8').split(/\r?\n/)
  for (let i = 0; i < lines.length; i++) {
    const t = lines[i].trim()
    if (t === '') continue
    if (!/^\d+$/.test(t)) throw new UsageError(`${path}:${i + 1}: not a decimal chunk length: ${JSON.stringify(t)}`)
    sizes.push(Number(t))
  }
  return sizes
}

/** A chunker that re-slices the byte stream into exactly `sizes`. */
function exactChunker (sizes) {
  return async function * (source) {
    let idx = 0
    let parts = []
    let have = 0
    let emitted = 0
    const take = (n) => {
      const out = new Uint8Array(n)
      let off = 0
      while (off < n) {
        const p = parts[0]
        const k = Math.min(p.length, n - off)
        out.set(p.subarray(0, k), off)
        off += k
        if (k === p.length) parts.shift()
        else parts[0] = p.subarray(k)
      }
      have -= n
      return out
    }
    for await (const buf of source) {
      if (buf.length === 0) continue
      parts.push(buf)
      have += buf.length
      while (idx < sizes.length && have >= sizes[idx]) {
        if (sizes[idx] === 0) throw new Error(`chunk ${idx} has length 0`)
        yield take(sizes[idx++])
        emitted++
      }
      if (idx === sizes.length && have > 0) {
        throw new Error(`chunk sizes sum to less than the file size (${sizes.length} chunks)`)
      }
    }
    if (have > 0 || idx < sizes.length) {
      const allZero = sizes.every((s) => s === 0)
      if (!(have === 0 && emitted === 0 && allZero && sizes.length <= 1)) {
        throw new Error(`chunk sizes do not match the file size (used ${idx} of ${sizes.length} chunks, ${have} bytes left over)`)
      }
    }
    if (emitted === 0) {
      parts = []
      yield new Uint8Array(0) // empty file: a single empty raw leaf
    }
  }
}

/**
 * Write-only blockstore that stores nothing. With a `hasher` other than
 * sha2-256 it re-addresses the importer's sha2-256 blocks (see header).
 */
class RehashingBlockstore {
  constructor (hasher, carWriter) {
    this.hasher = hasher
    this.map = new Map() // sha2-256 CID string -> re-hashed CID
    this.carWriter = carWriter
    this.written = new Set()
  }

  async put (cid, bytes) {
    if (!(bytes instanceof Uint8Array)) throw new Error('unexpected non-Uint8Array block')
    if (this.hasher == null) {
      await this.write(cid, bytes)
      return cid
    }
    let out = bytes
    if (cid.code === DAG_PB) {
      const node = dagPb.decode(bytes)
      const again = dagPb.encode(node)
      if (!equalBytes(again, bytes)) throw new Error(`dag-pb block ${cid} does not round-trip`)
      const Links = node.Links.map((l) => {
        const h = this.map.get(l.Hash.toString())
        if (h == null) throw new Error(`child ${l.Hash} of ${cid} was not written before its parent`)
        return { ...l, Hash: h }
      })
      out = dagPb.encode({ ...node, Links })
      if (out.length !== bytes.length) throw new Error(`re-encoded block ${cid} changed length`)
    } else if (cid.code !== RAW) {
      throw new Error(`unexpected codec 0x${cid.code.toString(16)} from importer`)
    }
    const next = CID.createV1(cid.code, await this.hasher.digest(out))
    this.map.set(cid.toString(), next)
    await this.write(next, out)
    return cid
  }

  async write (cid, bytes) {
    if (this.carWriter == null) return
    const k = cid.toString()
    if (this.written.has(k)) return
    this.written.add(k)
    await this.carWriter.put({ cid, bytes })
  }

  finalCid (cid) {
    if (this.hasher == null) return cid
    const c = this.map.get(cid.toString())
    if (c == null) throw new Error(`root ${cid} was never written`)
    return c
  }
}

function equalBytes (a, b) {
  return a.length === b.length && Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.length), Buffer.from(b.buffer, b.byteOffset, b.length)) === 0
}

async function main () {
  const { file, sizesFile, hash, car: carPath } = parseArgs(process.argv.slice(2))
  const sizes = readSizes(sizesFile)
  const fileSize = (await fs.promises.stat(file)).size
  const total = sizes.reduce((a, b) => a + b, 0)
  if (total !== fileSize) {
    throw new UsageError(`chunk sizes sum to ${total} but ${file} has ${fileSize} bytes`)
  }
  // CAR output: header written with a placeholder root of the same length as
  // the real one (CIDv1, 32-byte digest), patched once the root is known.
  let carWriter = null
  let carDone = null
  if (carPath != null) {
    const { writer, out } = CarWriter.create([PLACEHOLDER_ROOT])
    carWriter = writer
    const ws = fs.createWriteStream(carPath)
    carDone = (async () => {
      for await (const chunk of out) {
        if (!ws.write(chunk)) await once(ws, 'drain')
      }
      ws.end()
      await once(ws, 'finish')
    })()
  }
  const bs = new RehashingBlockstore(hash === 'blake3' ? blake3Hasher : null, carWriter)
  const options = {
    rawLeaves: true,
    cidVersion: 1,
    reduceSingleLeafToSelf: true,
    wrapWithDirectory: false,
    layout: balanced({ maxChildrenPerNode: MAX_CHILDREN }),
    chunker: exactChunker(sizes)
  }
  let root
  for await (const entry of importer([{ content: fs.createReadStream(file) }], bs, options)) {
    if (root != null) throw new Error('importer produced more than one root')
    root = entry.cid
  }
  if (root == null) throw new Error('importer produced no root')
  if (root.multihash.code !== sha256.code) throw new Error('importer did not use sha2-256')
  const out = bs.finalCid(root)
  if (carWriter != null) {
    await carWriter.close()
    await carDone
    const fh = await fs.promises.open(carPath, 'r+')
    try {
      await CarWriter.updateRootsInFile(fh, [out])
    } finally {
      await fh.close()
    }
  }
  process.stdout.write(`${out.toString()}\n`)
  return 0
}

runMain(main)
