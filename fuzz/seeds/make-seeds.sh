#!/usr/bin/env bash
# Regenerate fuzz/seeds/ with real tools: nix-store --dump, nix copy, nix-hash, and nixdag itself
# (`add` + `export-car`, and examples/dag_car.rs for tiny deep DAGs). Needs nix (2.8), python3, cargo.
# Store paths and signatures depend on the machine's keys and contents; the committed seeds are one run.
#
# usage: fuzz/seeds/make-seeds.sh                              # every target's seeds
#        fuzz/seeds/make-seeds.sh range_parse upload_narinfo   # only these (need nix alone, no cargo)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
nixflags=(--extra-experimental-features nix-command)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"

# --- range_parse: size:u64le + a Range header -------------------------------------------------------
seeds_range_parse() {
  local d="$here/range_parse"
  rm -rf "$d" && mkdir -p "$d"
  local s4k='\x00\x10\x00\x00\x00\x00\x00\x00' s10='\x0a\x00\x00\x00\x00\x00\x00\x00' s0='\x00\x00\x00\x00\x00\x00\x00\x00'
  r() { printf "$1$2" > "$d/$3"; }
  r "$s4k" 'bytes=0-99' a-b
  r "$s4k" 'bytes=100-' a
  r "$s4k" 'bytes=-100' suffix
  r "$s4k" 'bytes=0-1,5-9' multi
  r "$s4k" 'bytes=4096-' at-end
  r "$s4k" 'bytes=5-2' inverted
  r "$s4k" ' bytes= 3 - 7 ' blanks
  r "$s4k" 'items=0-1' other-unit
  r "$s10" 'bytes=-0' suffix-zero
  r "$s10" 'bytes=99999999999999999999-' overflow-first
  r "$s10" 'bytes=0-18446744073709551616' overflow-last
  r "$s10" 'bytes=-99999999999999999999' overflow-suffix
  r "$s10" 'bytes=00000000000000000000003-0009' leading-zeros
  r "$s0" 'bytes=0-' empty-body
  r '\xff\xff\xff\xff\xff\xff\xff\xff' 'bytes=18446744073709551614-18446744073709551615' max-size
}

# --- upload_narinfo: flags:u8 refs:u8 narinfo NUL nar, for real paths `nix-store` made ---------------
# The narinfos are written by hand in Nix's format (what `nix copy` uploads), from `nix-store -q` and
# `nix path-info --json` (for CA:). One is signed by Nix with the target's key K (`nix store sign`).
seeds_upload_narinfo() {
  local d="$here/upload_narinfo" w
  rm -rf "$d" && mkdir -p "$d"
  w="$(mktemp -d)"
  mkdir -p "$w/tree/sub"
  printf 'hello\n' > "$w/hello"
  printf '#!/bin/sh\necho hi\n' > "$w/run" && chmod +x "$w/run"
  printf 'a\n' > "$w/tree/a" && printf 'b\n' > "$w/tree/sub/b" && ln -s ../a "$w/tree/sub/to-a"
  # The fuzz target's key K (fuzz_targets/upload_narinfo.rs); made for these seeds, signs nothing else.
  printf '%s' 'nixdag-fuzz-1:jUPnr37sVLSgPxZaCVup4j0zN/5yuzucJtovoiXNLb2vNsixc8tHQhKIOxxraWTZbPfqsS3G9gZuyDFaOIxEAQ==' > "$w/sk"
  cat > "$w/out.nix" <<'NIX'
let dep = builtins.toFile "fuzz-seed-dep" "a dependency\n";
in derivation {
  name = "fuzz-seed-out";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo ${dep} > $out" ];
}
NIX
  local rec flat flat1 exe tree r512 dep txt out
  rec="$(nix-store --add "$w/hello")"                         # fixed:r:sha256, one file
  flat="$(nix-store --add-fixed sha256 "$w/hello")"           # fixed:sha256 (flat)
  flat1="$(nix-store --add-fixed sha1 "$w/hello")"            # fixed:sha1 (flat)
  exe="$(nix-store --add "$w/run")"                           # fixed:r:sha256, executable
  tree="$(nix-store --add "$w/tree")"                         # fixed:r:sha256, a directory
  r512="$(nix-store --add-fixed --recursive sha512 "$w/tree")" # fixed:r:sha512 (not checkable)
  dep="$(nix "${nixflags[@]}" eval --raw --expr 'builtins.toFile "dep.txt" "dep\n"')"    # text:sha256
  txt="$(nix "${nixflags[@]}" eval --raw --expr \
    'builtins.toFile "uses-dep.txt" "see ${builtins.toFile "dep.txt" "dep\n"}\n"')"    # text, one reference
  out="$(nix-build --no-out-link "$w/out.nix" 2>/dev/null)"    # input-addressed, a reference, a deriver
  nix "${nixflags[@]}" store sign --key-file "$w/sk" "$out"
  narinfo() {
    local p="$1" h ca refs deriver sigs
    h="$(nix-store -q --hash "$p")"
    refs="$(nix-store -q --references "$p" | xargs -r -n1 basename | sort | tr '\n' ' ' | sed 's/ $//')"
    ca="$(nix "${nixflags[@]}" path-info --json "$p" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("ca") or "")')"
    deriver="$(nix-store -q --deriver "$p")"
    sigs="$(nix "${nixflags[@]}" path-info --json --sigs "$p" | python3 -c 'import json,sys; print("\n".join(json.load(sys.stdin)[0].get("signatures", [])))')"
    printf 'StorePath: %s\nURL: nar/%s.nar\nCompression: none\nNarHash: %s\nNarSize: %s\nReferences: %s\n' \
      "$p" "${h#sha256:}" "$h" "$(nix-store -q --size "$p")" "$refs"
    [ "$deriver" = unknown-deriver ] || printf 'Deriver: %s\n' "$(basename "$deriver")"
    [ -z "$sigs" ] || printf 'Sig: %s\n' $sigs
    [ -z "$ca" ] || printf 'CA: %s\n' "$ca"
  }
  # seed NAME FLAGS REFS PATH: see the input format in fuzz_targets/upload_narinfo.rs.
  seed() {
    { printf "$2$3"; narinfo "$4"; printf '\0'; nix-store --dump "$4"; } > "$d/$1"
  }
  # 0x20: keys=[K], new path; 0x61: recorded before, upload adds K's signature; 0x02: another NarHash.
  seed recursive '\x20' '\xff' "$rec"
  seed recursive-again '\x61' '\xff' "$rec"
  seed recursive-conflict '\x02' '\xff' "$rec"
  seed flat '\x20' '\xff' "$flat"
  seed flat-sha1 '\x20' '\xff' "$flat1"
  seed executable '\x20' '\xff' "$exe"
  seed tree '\x20' '\xff' "$tree"
  seed tree-sha512 '\x20' '\xff' "$r512"
  seed text '\x20' '\xff' "$dep"
  seed text-ref '\x20' '\xff' "$txt"
  seed text-ref-missing '\x20' '\x00' "$txt"
  seed text-ref-again '\x65' '\xff' "$txt"
  seed built-signed '\x20' '\xff' "$out"
  seed built-signed-again '\x61' '\xff' "$out"
  seed built-bad-sig '\xa0' '\xff' "$out"
  seed built-no-key '\x00' '\xff' "$out"
  seed built-conflict-size '\x06' '\xff' "$out"
  seed built-recorded-more-sigs '\x63' '\xff' "$out"
  chmod -R u+w "$w" && rm -rf "$w"
}

if [ "$#" -gt 0 ]; then
  for t in "$@"; do "seeds_$t"; done
  ls "$here/$1"
  exit 0
fi

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

seeds_range_parse
seeds_upload_narinfo

ls "$here"/*/ | head -100
du -sh "$here"
