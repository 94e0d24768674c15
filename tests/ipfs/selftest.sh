#!/usr/bin/env bash
# Self-test of the IPFS verifier scripts in this directory, without nixdag.
# Runs from any cwd; installs node_modules from package-lock.json (npm ci) if
# missing; works in a temp dir that is always removed. Ends with the line
# "ipfs-selftest: N passed, M failed" and exits non-zero if anything failed.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "selftest: installing node_modules (npm ci)" >&2
  npm ci --no-audit --no-fund --loglevel=error >&2
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/nixdag-ipfs-selftest.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "PASS: $1"; }
fail() { failed=$((failed + 1)); echo "FAIL: $1"; }

# expect_ok NAME REGEX CMD...: command exits 0 and its stdout matches REGEX
expect_ok() {
  local name="$1" re="$2"; shift 2
  local out rc=0
  out="$("$@" 2>"$TMP/stderr")" || rc=$?
  if [[ $rc -eq 0 && "$out" =~ $re ]]; then
    pass "$name"
  else
    fail "$name (rc=$rc stdout='$out' stderr='$(head -c 300 "$TMP/stderr")')"
  fi
}

# expect_err NAME REGEX CMD...: command exits non-zero, prints nothing on
# stdout and exactly one stderr line "error: ..." matching REGEX
expect_err() {
  local name="$1" re="$2"; shift 2
  local out err rc=0
  out="$("$@" 2>"$TMP/stderr")" || rc=$?
  err="$(cat "$TMP/stderr")"
  if [[ $rc -ne 0 && -z "$out" && "$(wc -l <"$TMP/stderr")" -eq 1 && "$err" =~ ^error:\ .*$re ]]; then
    pass "$name"
  else
    fail "$name (rc=$rc stdout='$out' stderr='${err:0:300}')"
  fi
}

# expect_same NAME FILE1 FILE2
expect_same() {
  if cmp -s "$2" "$3"; then pass "$1"; else fail "$1"; diff "$2" "$3" | head -5 || true; fi
}

N="node"
IPFS_CAR="$HERE/node_modules/.bin/ipfs-car"
cd "$TMP"

# --- a 5 MiB (+ a short last chunk) random file, packed by ipfs-car ----------
head -c $((5 * 1024 * 1024 + 12345)) /dev/urandom >f.bin
root="$("$IPFS_CAR" pack f.bin --no-wrap -o f.car)"
"$IPFS_CAR" pack f.bin -o wrapped.car >/dev/null

expect_ok "verify ipfs-car CAR (sha2-256)" "^ok: $root 7 blocks 5255225 bytes$" \
  $N "$HERE/verify-car.mjs" f.car f.bin

cid="$($N "$HERE/car-mutate.mjs" flip f.car flip.car)"
expect_err "flipped byte -> tampered" "tampered block $cid" $N "$HERE/verify-car.mjs" flip.car f.bin
cid="$($N "$HERE/car-mutate.mjs" drop f.car drop.car)"
expect_err "removed block -> missing" "missing block $cid" $N "$HERE/verify-car.mjs" drop.car f.bin
cid="$($N "$HERE/car-mutate.mjs" extra f.car extra.car)"
expect_err "appended block -> extra" "extra block $cid" $N "$HERE/verify-car.mjs" extra.car f.bin

cp f.bin g.bin
printf '\xff' | dd of=g.bin bs=1 seek=3000000 count=1 conv=notrunc status=none
cmp -s f.bin g.bin && printf '\x00' | dd of=g.bin bs=1 seek=3000000 count=1 conv=notrunc status=none
expect_err "wrong expected bytes -> content mismatch" "content mismatch at byte offset 3000000" \
  $N "$HERE/verify-car.mjs" f.car g.bin
head -c 1000 f.bin >short.bin
expect_err "wrong expected size -> size mismatch" "size mismatch" $N "$HERE/verify-car.mjs" f.car short.bin
expect_err "directory-wrapped CAR rejected" "UnixFS directory, expected file" \
  $N "$HERE/verify-car.mjs" wrapped.car f.bin

# --- layout of ipfs-car's DAG; importer with the same chunking -----------------
$N "$HERE/layout.mjs" f.car >f.layout
if [[ "$(head -1 f.layout)" == "0 dag-pb "*"unixfs=file filesize=5255225 "* && "$(grep -c '^1 raw ' f.layout)" -eq 6 ]]; then
  pass "ipfs-car --no-wrap root is a dag-pb file node over 6 raw leaves"
else
  fail "ipfs-car layout: $(head -c 300 f.layout)"
fi
sed -n 's/^1 raw len=//p' f.layout >f.sizes

expect_ok "import-root sha256 == ipfs-car root" "^$root$" \
  $N "$HERE/import-root.mjs" f.bin f.sizes --hash sha256

b3="$($N "$HERE/import-root.mjs" f.bin f.sizes --hash blake3 --car b3.car)"
if [[ "$b3" == bafyb4i* ]]; then pass "import-root blake3 root is dag-pb/blake3 ($b3)"; else fail "blake3 root '$b3'"; fi
expect_ok "verify importer CAR (BLAKE3)" "^ok: $b3 7 blocks 5255225 bytes$" \
  $N "$HERE/verify-car.mjs" b3.car f.bin
$N "$HERE/layout.mjs" b3.car >b3.layout
expect_same "layout(BLAKE3 importer CAR) == layout(ipfs-car CAR)" f.layout b3.layout
cid="$($N "$HERE/car-mutate.mjs" flip b3.car b3flip.car)"
expect_err "BLAKE3 flipped byte -> tampered" "tampered block $cid" $N "$HERE/verify-car.mjs" b3flip.car f.bin
cid="$($N "$HERE/car-mutate.mjs" extra b3.car b3extra.car)"
expect_err "BLAKE3 appended block -> extra" "extra block $cid" $N "$HERE/verify-car.mjs" b3extra.car f.bin

# --- BLAKE3 known answer: empty file = raw leaf of the BLAKE3 test vector -----
: >empty.bin
: >empty.sizes
expect_ok "BLAKE3 empty-file CID (official test vector af1349b9...)" \
  "^bafkr4ifpcne3t5pzugtkaqcn5i3nzskjtpfslsnnyejlpte2spfoihzsmi$" \
  $N "$HERE/import-root.mjs" empty.bin empty.sizes

# --- single chunk: the root is the raw leaf itself ----------------------------
head -c 1000 f.bin >one.bin
echo 1000 >one.sizes
sroot="$("$IPFS_CAR" pack one.bin --no-wrap -o one.car)"
expect_ok "single chunk: import-root sha256 == ipfs-car raw root" "^$sroot$" \
  $N "$HERE/import-root.mjs" one.bin one.sizes --hash sha256
expect_ok "single chunk: verify" "^ok: bafkrei[a-z2-7]+ 1 blocks 1000 bytes$" \
  $N "$HERE/verify-car.mjs" one.car one.bin

# --- >174 chunks: two-level balanced tree, width 174 -------------------------
head -c 400000 /dev/urandom >m.bin
for _ in $(seq 400); do echo 1000; done >m.sizes
mroot="$($N "$HERE/import-root.mjs" m.bin m.sizes --car m.car)"
expect_ok "400 chunks: verify BLAKE3 CAR" "^ok: $mroot 404 blocks 400000 bytes$" \
  $N "$HERE/verify-car.mjs" m.car m.bin
$N "$HERE/layout.mjs" m.car >m.layout
shape="$(awk '$2 == "dag-pb" { n = $0; sub(/.*links=\[/, "", n); print $1 ":" gsub(/:""/, "", n) }' m.layout | tr '\n' ' ')"
if [[ "$shape" == "0:3 1:174 1:174 1:52 " ]]; then pass "400 chunks: balanced 174-wide shape"; else fail "400 chunks shape '$shape'"; fi

echo "ipfs-selftest: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
