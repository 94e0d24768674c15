#!/usr/bin/env python3
"""Turn a CAR v1 file (as `nixdag export-car` or examples/dag_car.rs write it) into fuzz seeds.

usage: car2seeds.py CAR NAME SEEDS_DIR [--no-dag-read]

Writes:
  SEEDS_DIR/dagpb_decode/NAME-<i>.pb   each dag-pb block, verbatim
  SEEDS_DIR/cid_parse/NAME-root.txt    the root CID as text (first root in the header)
  SEEDS_DIR/cid_parse/NAME-root.bin    the root CID as bytes
  SEEDS_DIR/dag_read/NAME.dag          the whole DAG in dag_read's block language (fuzz_targets/dag_read.rs):
      flags:u8 start:u32le len:u32le, blocks children-first joined by b"\\xffBLK\\xff", each CID of a
      block of the DAG replaced by the placeholder b"\\xfeL" + index + (b"r" raw | b"p" dag-pb); the root last.
"""
import os
import struct
import sys

SEP = b"\xffBLK\xff"
RAW, DAG_PB = 0x55, 0x70


def varint(buf, pos):
    v, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, pos
        shift += 7


def read_car(data):
    hlen, pos = varint(data, 0)
    header = data[pos : pos + hlen]
    pos += hlen
    blocks = []  # (cid bytes, codec, block bytes) in CAR (pre-order) order
    while pos < len(data):
        flen, pos = varint(data, pos)
        frame = data[pos : pos + flen]
        pos += flen
        p = 0
        _version, p = varint(frame, p)
        codec, p = varint(frame, p)
        _code, p = varint(frame, p)
        dlen, p = varint(frame, p)
        p += dlen
        blocks.append((frame[:p], codec, frame[p:]))
    return header, blocks


def main():
    car, name, out = sys.argv[1], sys.argv[2], sys.argv[3]
    dag_read = "--no-dag-read" not in sys.argv[4:]
    data = open(car, "rb").read()
    header, blocks = read_car(data)
    for d in ("dagpb_decode", "cid_parse", "dag_read"):
        os.makedirs(os.path.join(out, d), exist_ok=True)

    root_cid, root_codec, _ = blocks[0]
    open(os.path.join(out, "cid_parse", f"{name}-root.bin"), "wb").write(root_cid)
    for i, (cid, codec, block) in enumerate(blocks):
        if codec == DAG_PB and i < 4:
            open(os.path.join(out, "dagpb_decode", f"{name}-{i}.pb"), "wb").write(block)

    if not dag_read:
        return
    # Reversed pre-order: every block comes after all of its descendants, the root last.
    order = list(reversed(blocks))
    index = {cid: i for i, (cid, _, _) in enumerate(order)}
    assert len(order) <= 64, "dag_read takes at most 64 blocks"
    out_blocks = []
    for cid, codec, block in order:
        if codec == DAG_PB:
            for other, i in index.items():
                tag = b"r" if other[1] == RAW else b"p"
                block = block.replace(other, b"\xfeL" + bytes([i]) + tag)
        assert SEP not in block
        out_blocks.append(block)
    flags = 0 if root_codec == DAG_PB else 1
    head = bytes([flags]) + struct.pack("<II", 5, 100)
    open(os.path.join(out, "dag_read", f"{name}.dag"), "wb").write(head + SEP.join(out_blocks))


if __name__ == "__main__":
    main()
