// Shared helpers for the nixdag IPFS verifier scripts (verify-car.mjs,
// layout.mjs, import-root.mjs, car-mutate.mjs).
//
// Everything here is deliberately independent of the Rust code: CAR parsing is
// done by @ipld/car, dag-pb by @ipld/dag-pb, UnixFS by ipfs-unixfs, hashing by
// @noble/hashes (BLAKE3) and multiformats (sha2-256).

import fs from 'node:fs'
import { CarIndexer } from '@ipld/car/indexer'
import * as dagPb from '@ipld/dag-pb'
import { blake3 } from '@noble/hashes/blake3.js'
import { from as hasherFrom } from 'multiformats/hashes/hasher'
import { sha256 } from 'multiformats/hashes/sha2'
import * as raw from 'multiformats/codecs/raw'

export const RAW = raw.code // 0x55
export const DAG_PB = dagPb.code // 0x70
export const BLAKE3 = 0x1e
export const SHA2_256 = 0x12

/** multiformats hasher for BLAKE3-256, multihash code 0x1e. */
export const blake3Hasher = hasherFrom({
  name: 'blake3',
  code: BLAKE3,
  encode: (input) => blake3(input) // 32-byte output by default
})

/** Hashers we verify with, by multihash code. Anything else is an error. */
export const HASHERS = new Map([
  [BLAKE3, blake3Hasher],
  [SHA2_256, sha256]
])

export const codecName = (code) =>
  code === RAW ? 'raw' : code === DAG_PB ? 'dag-pb' : `codec-0x${code.toString(16)}`

/** A verification failure: printed as one `error: ...` line, exit 1. */
export class VerifyError extends Error {}

/** A usage error: printed as one `error: ...` line, exit 2. */
export class UsageError extends Error {}

/**
 * Run an async main, turning any exception into exactly one `error: ...` line
 * on stderr and a non-zero exit code.
 */
export function runMain (main) {
  main().then(
    (code) => { process.exitCode = code ?? 0 },
    (err) => {
      const msg = String(err?.message ?? err).split('\n')[0]
      process.stderr.write(`error: ${msg}\n`)
      process.exitCode = err instanceof UsageError ? 2 : 1
    }
  )
}

/**
 * Index a CAR file (v1 or v2) without keeping block bytes in memory.
 * Returns { version, roots, entries, byKey, readBlock(entry), close() }.
 * `entries` is in file order (duplicates kept); `byKey` maps cid.toString()
 * to the first entry with that CID.
 */
export async function openCar (path) {
  let indexer
  try {
    indexer = await CarIndexer.fromIterable(fs.createReadStream(path))
  } catch (err) {
    throw new VerifyError(`cannot parse CAR header of ${path}: ${err.message}`)
  }
  const roots = await indexer.getRoots()
  const entries = []
  try {
    for await (const e of indexer) {
      entries.push({ cid: e.cid, blockOffset: e.blockOffset, blockLength: e.blockLength })
    }
  } catch (err) {
    throw new VerifyError(`cannot parse CAR body of ${path} after ${entries.length} blocks: ${err.message}`)
  }
  const byKey = new Map()
  for (const e of entries) {
    const k = e.cid.toString()
    if (!byKey.has(k)) byKey.set(k, e)
  }
  const fh = await fs.promises.open(path, 'r')
  async function readBlock (entry) {
    const buf = new Uint8Array(entry.blockLength)
    let off = 0
    while (off < entry.blockLength) {
      const { bytesRead } = await fh.read(buf, off, entry.blockLength - off, entry.blockOffset + off)
      if (bytesRead === 0) throw new VerifyError(`truncated CAR: block ${entry.cid} runs past end of file`)
      off += bytesRead
    }
    return buf
  }
  return { version: indexer.version, roots, entries, byKey, readBlock, close: () => fh.close() }
}

/** Hash `bytes` with the CID's hash function; throws VerifyError on mismatch. */
export async function checkBlockHash (cid, bytes) {
  const mh = cid.multihash
  const hasher = HASHERS.get(mh.code)
  if (hasher == null) {
    throw new VerifyError(`unsupported multihash code 0x${mh.code.toString(16)} in block ${cid}`)
  }
  if (mh.size !== 32) {
    throw new VerifyError(`unexpected digest length ${mh.size} (want 32) in block ${cid}`)
  }
  const got = (await hasher.digest(bytes)).digest
  if (got.length !== mh.digest.length || !got.every((b, i) => b === mh.digest[i])) {
    throw new VerifyError(`tampered block ${cid}`)
  }
}

/** Decode a dag-pb block, turning decoder errors into VerifyError. */
export function decodePb (cid, bytes) {
  try {
    return dagPb.decode(bytes)
  } catch (err) {
    throw new VerifyError(`invalid dag-pb block ${cid}: ${err.message}`)
  }
}

/** Minimal protobuf reader over `bytes`: yields {field, wt, value, start, end}. */
function * pbFields (bytes) {
  let pos = 0
  const varint = () => {
    let x = 0n
    let shift = 0n
    for (;;) {
      if (pos >= bytes.length) throw new Error('truncated varint')
      const b = bytes[pos++]
      x |= BigInt(b & 0x7f) << shift
      if ((b & 0x80) === 0) return x
      shift += 7n
      if (shift > 63n) throw new Error('varint too long')
    }
  }
  while (pos < bytes.length) {
    const start = pos
    const key = varint()
    const field = Number(key >> 3n)
    const wt = Number(key & 7n)
    let value
    if (wt === 0) {
      value = varint()
    } else if (wt === 1) {
      value = bytes.subarray(pos, pos + 8); pos += 8
    } else if (wt === 2) {
      const len = Number(varint())
      value = bytes.subarray(pos, pos + len); pos += len
    } else if (wt === 5) {
      value = bytes.subarray(pos, pos + 4); pos += 4
    } else {
      throw new Error(`bad wire type ${wt}`)
    }
    if (pos > bytes.length) throw new Error('truncated field')
    yield { field, wt, value, start, end: pos }
  }
}

function decodeVarints (bytes) {
  const out = []
  for (const f of pbFields(concatKeyless(bytes))) out.push(f.value)
  return out
}
// Packed repeated varints have no keys; wrap each one with a fake key (field 1,
// varint) so pbFields can read them.
function concatKeyless (bytes) {
  const out = []
  let i = 0
  while (i < bytes.length) {
    out.push(0x08)
    do { out.push(bytes[i]) } while ((bytes[i++] & 0x80) !== 0 && i < bytes.length)
  }
  return Uint8Array.from(out)
}

const UNIXFS_TYPES = ['raw', 'directory', 'file', 'metadata', 'symlink', 'hamt-sharded-directory']

/**
 * Decode a UnixFS `Data` protobuf directly from its wire bytes (ipfs-unixfs's
 * UnixFS.unmarshal drops the stored `filesize`, which we want to check).
 * Returns { type, typeCode, data, filesize, blocksizes, hashType, fanout,
 * mode, mtime, wire } where absent optional fields are undefined and `wire`
 * is the field list from wireFields().
 */
export function decodeUnixfs (bytes) {
  const r = { typeCode: undefined, data: undefined, filesize: undefined, blocksizes: [], hashType: undefined, fanout: undefined, mode: undefined, mtime: undefined }
  for (const f of pbFields(bytes)) {
    switch (f.field) {
      case 1: r.typeCode = Number(f.value); break
      case 2: r.data = f.value; break
      case 3: r.filesize = f.value; break
      case 4:
        if (f.wt === 0) r.blocksizes.push(f.value)
        else if (f.wt === 2) r.blocksizes.push(...decodeVarints(f.value))
        else throw new Error('bad wire type for blocksizes')
        break
      case 5: r.hashType = f.value; break
      case 6: r.fanout = f.value; break
      case 7: r.mode = f.value; break
      case 8: r.mtime = f.value; break
      default: throw new Error(`unknown UnixFS field ${f.field}`)
    }
  }
  r.type = r.typeCode === undefined ? undefined : (UNIXFS_TYPES[r.typeCode] ?? `type-${r.typeCode}`)
  r.wire = wireFields(bytes)
  return r
}

/**
 * List the protobuf wire fields of `bytes` as e.g. "1:v,3:v,4:v*5" (field
 * number, wire type letter v=varint/d=delimited/f=fixed64/i=fixed32, runs of
 * the same field compressed). Independent of any schema; used by layout.mjs so
 * that encoding differences (field order, packed vs. unpacked, absent vs.
 * default fields) show up in the canonical description.
 */
export function wireFields (bytes) {
  const out = []
  for (const f of pbFields(bytes)) {
    const name = `${f.field}:${['v', 'f', 'd', 'sg', 'eg', 'i'][f.wt]}`
    const last = out[out.length - 1]
    if (last && last.name === name) last.n++
    else out.push({ name, n: 1 })
  }
  return out.map(({ name, n }) => (n > 1 ? `${name}*${n}` : name)).join(',')
}

/** A read-only blockstore over the blocks of one CAR (from `openCar`); a block it lacks is "missing". */
export class CarBlockstore {
  constructor (car) { this.car = car }
  has (cid) { return this.car.byKey.has(cid.toString()) }
  async * get (cid) {
    const e = this.car.byKey.get(cid.toString())
    if (e == null) throw new VerifyError(`missing block ${cid}`)
    yield await this.car.readBlock(e)
  }

  put () { throw new Error('read-only blockstore') }
}
