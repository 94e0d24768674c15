#!/usr/bin/env bash
# Regenerate fuzz/seeds/ with real tools: nix-store --dump, nix copy, nix-hash, and nixdag itself
# (`add` + `export-car`, and examples/dag_car.rs for tiny deep DAGs). Needs nix (2.8), python3, cargo.
# Store paths and signatures depend on the machine's keys and contents; the committed seeds are one run.
#
# usage: fuzz/seeds/make-seeds.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
nixflags=(--extra-experimental-features nix-command)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

for t in nar_parse narinfo_parse hash_parse store_path_parse dagpb_decode cid_parse dag_read http_path_parse; do
  rm -rf "${here:?}/$t"
  mkdir -p "$here/$t"
done

# --- NARs: small trees, dumped by Nix itself -------------------------------------------------------
t="$work/trees"
mkdir -p "$t"
printf 'hello\n' > "$t/file"
: > "$t/empty"
printf '12345678' > "$t/eight"                       # contents exactly one 8-byte word: no padding
printf '#!/bin/sh\necho hi\n' > "$t/exe" && chmod +x "$t/exe"
ln -s file "$t/link"
ln -s ../../some/where/else "$t/uplink"
mkdir -p "$t/tree/sub/deeper" "$t/tree/emptydir"
printf 'a\n' > "$t/tree/a"
printf 'B\n' > "$t/tree/B"                           # sorts before lower case
printf 'dash\n' > "$t/tree/a-b"
printf 'dot\n' > "$t/tree/a.b"
printf 'x\n' > "$t/tree/sub/deeper/x"
printf '#!/bin/sh\n' > "$t/tree/sub/run" && chmod +x "$t/tree/sub/run"
ln -s ../a "$t/tree/sub/to-a"
mkdir -p "$t/emptydir"
mkdir -p "$t/utf8" && printf 'u\n' > "$t/utf8/$(printf 'caf\xc3\xa9')"
for n in file empty eight exe link uplink tree emptydir utf8; do
  nix-store --dump "$t/$n" > "$here/nar_parse/$n.nar"
done

# --- narinfos: nix copy to a file:// binary cache ----------------------------------------------------
cat > "$work/drv.nix" <<'NIX'
let dep = builtins.toFile "fuzz-seed-dep" "a dependency\n";
in derivation {
  name = "fuzz-seed-out";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ${dep} > $out" ];
}
NIX
added="$(nix-store --add "$t/file")"
built="$(nix-build --no-out-link "$work/drv.nix" 2>/dev/null)"
drv="$(nix-store -q --deriver "$built")"
nix-store --generate-binary-cache-key fuzz-seed-1 "$work/sk" "$work/pk"
nix "${nixflags[@]}" copy --to "file://$work/cache-plain?compression=none&secret-key=$work/sk" "$added" "$built"
nix "${nixflags[@]}" copy --to "file://$work/cache-xz" "$added"
for f in "$work"/cache-plain/*.narinfo; do cp "$f" "$here/narinfo_parse/plain-$(basename "$f")"; done
for f in "$work"/cache-xz/*.narinfo; do cp "$f" "$here/narinfo_parse/xz-$(basename "$f")"; done
cp "$work/cache-plain/nix-cache-info" "$here/narinfo_parse/nix-cache-info"

# --- hashes: every form Nix prints ------------------------------------------------------------------
for algo in md5 sha1 sha256 sha512; do
  for form in --base32 --base16 --base64 --sri; do
    h="$(nix "${nixflags[@]}" hash file --type "$algo" "$form" "$t/file")"
    case "$form" in
      --sri) printf '%s' "$h" > "$here/hash_parse/$algo-sri.txt" ;;
      *) printf '%s:%s' "$algo" "$h" > "$here/hash_parse/$algo${form#--}.txt"
         [ "$algo" = sha256 ] && printf '%s' "$h" > "$here/hash_parse/bare-${form#--}.txt" ;;
    esac
  done
done
printf '%s' "$(nix-store -q --hash "$added")" > "$here/hash_parse/narhash.txt"

# --- store paths ----------------------------------------------------------------------------------
printf '%s' "$added" > "$here/store_path_parse/added.txt"
printf '%s' "$built" > "$here/store_path_parse/built.txt"
printf '%s' "$drv" > "$here/store_path_parse/drv.txt"
printf '%s\n%s' "$built" "$added" > "$here/store_path_parse/pair.txt"
basename "$built" | tr -d '\n' > "$here/store_path_parse/base-name.txt"

# --- DAGs: nixdag add + export-car, and tiny deep DAGs from nixdag's DagBuilder ----------------------
# NIXDAG_BIN: use an already built nixdag instead of building one.
nd="${NIXDAG_BIN:-$CARGO_TARGET_DIR/release/nixdag}"
[ -n "${NIXDAG_BIN:-}" ] || (cd "$root" && cargo build --release --quiet)
store="$work/store"
python3 -c 'import random; r=random.Random(7); print("".join(r.choice("abcdefghij \n") for _ in range(330000)), end="")' > "$work/big.txt"
head -c 3000 "$work/big.txt" > "$work/small.txt"
line() { "$nd" --store "$store" add "$@" | awk '{print $3}'; }
big_cid="$(line --file "$work/big.txt")"
small_cid="$(line --file --chunker fixed:256 "$work/small.txt")"
"$nd" --store "$store" export-car "$big_cid" -o "$work/big.car" 2>/dev/null
"$nd" --store "$store" export-car "$small_cid" -o "$work/small.car" 2>/dev/null
python3 "$here/car2seeds.py" "$work/big.car" cdc-330k "$here" --no-dag-read
python3 "$here/car2seeds.py" "$work/small.car" fixed256 "$here"
printf '%s' "$big_cid" > "$here/cid_parse/cdc-330k-root.txt"
printf '%s' "$small_cid" > "$here/cid_parse/fixed256-root.txt"
# The 330 KB DAG's root block alone (its leaves are too big for a seed): exercises missing blocks.
python3 -c '
import sys, struct
sys.path.insert(0, sys.argv[3])
from car2seeds import read_car
_, blocks = read_car(open(sys.argv[1], "rb").read())
open(sys.argv[2], "wb").write(bytes([0]) + struct.pack("<II", 0, 65536) + blocks[0][2])
' "$work/big.car" "$here/dag_read/cdc-330k-root-only.dag" "$here"

helper() { cargo run --quiet --manifest-path "$root/fuzz/Cargo.toml" --example dag_car -- "$@"; }
head -c 1000 "$work/big.txt" > "$work/k1.txt"
head -c 200 "$work/big.txt" > "$work/k2.txt"
head -c 512 /dev/zero > "$work/zeros"
printf 'one leaf only' > "$work/one"
helper "$work/k1.txt" 64 3 "$work/w3.car" > /dev/null
helper "$work/k2.txt" 16 2 "$work/w2.car" > /dev/null
helper "$work/zeros" 32 4 "$work/zeros.car" > /dev/null
helper "$work/one" 64 3 "$work/one.car" > /dev/null
python3 "$here/car2seeds.py" "$work/w3.car" w3-c64 "$here"
python3 "$here/car2seeds.py" "$work/w2.car" w2-c16 "$here"
python3 "$here/car2seeds.py" "$work/zeros.car" zeros-w4 "$here"
python3 "$here/car2seeds.py" "$work/one.car" one-leaf "$here"

# --- gateway request paths and Range headers ------------------------------------------------------
narhash32="$(nix-store -q --hash "$added" | cut -d: -f2)"
hp="$(basename "$added" | cut -c1-32)"
w() { printf "$1" > "$here/http_path_parse/$2"; }
w '\x01/nix-cache-info' cache-info
w "\\x01/$hp.narinfo" narinfo
w "\\x01/$hp.ls" listing
w "\\x01/nar/$narhash32.nar" nar
w "\\x01/nar/$narhash32.nar.xz" nar-xz
w "\\x01/nar/$narhash32.nar.zst" nar-zst
w '\x01/log/foo.drv' log
w '\x00\x00\x10\x00\x00\x00\x00\x00\x00bytes=0-99' range-a-b
w '\x00\x00\x10\x00\x00\x00\x00\x00\x00bytes=100-' range-a
w '\x00\x00\x10\x00\x00\x00\x00\x00\x00bytes=-100' range-suffix
w '\x00\x00\x10\x00\x00\x00\x00\x00\x00bytes=0-1,5-9' range-multi

ls "$here"/*/ | head -100
du -sh "$here"
