#!/usr/bin/env bash
# Runs every fuzz target (cargo-fuzz, libFuzzer) for
#   scripts/fuzz.sh [SECONDS] [TARGET...]   (default 60 s each; all targets)
# FUZZ_CORPUS=DIR keeps the corpora between runs (the long runs in docs/performance.md).
# forward_decode is seeded with the forward protocol test vectors, syslog_parse and
# syslog_framing with the syslog corpus lines (testdata/syslog/corpus.jsonl),
# cri_line with a few CRI and Docker json-file container log lines (full, partial,
# malformed), wal_scan
# with a WAL segment, disk_codec with a few disk buffer record payloads. Every
# crash found becomes a named unit test in crates/proto. cargo-fuzz needs nightly
# compiler flags (sanitizers, -Z options): the machine's one stable toolchain
# accepts them with RUSTC_BOOTSTRAP=1, so a fresh machine fuzzes without fetching a
# nightly. cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(forward_decode syslog_parse syslog_framing cri_line wal_scan disk_codec)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
mkdir -p "$work/forward" "$work/syslog" "$work/cri" "$work/wal" "$work/codec"
# A WAL segment of five records (crates/wal/testdata) seeds wal_scan.
find crates/wal/testdata -name '*.seg' -exec cp {} "$work/wal"/ \; 2>/dev/null || true
printf 'SLWSEG01' >"$work/wal/header-only"
# Disk buffer record payloads (codec version 1): one event; two sharing tag and
# source; one with tenant and bucket.
ev='\x00\x00\x00\x00\x00\x00\x00\x00\x00\x05hello\x03app\x01p'
printf "\x01\x01\x00\x00\x00$ev" >"$work/codec/one"
printf "\x01\x02\x00\x00\x00$ev\x03\x01\x00\x00\x00\x00\x00\x00\x00\x02hi" >"$work/codec/same"
printf '\x01\x01\x00\x00\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x01x\x01t\x01s\x02c1\x07' >"$work/codec/tenant"
printf '2024-01-01T00:00:00.000000000Z stdout F hello world\n' >"$work/cri/full"
printf '2024-01-01T00:00:00.123456789+02:00 stderr P part one\n' >"$work/cri/partial"
printf '2024-01-01T00:00:00Z stdout F\n' >"$work/cri/empty"
printf 'not a cri line at all\n' >"$work/cri/bad"
printf '{"log":"hello \\"world\\"\\n","stream":"stdout","time":"2024-01-01T00:00:00.5Z"}' >"$work/cri/docker"
printf '{"log":"part \\u00e9","stream":"stderr","time":"2024-01-01T00:00:00Z","attrs":{"a":"b"}}' >"$work/cri/docker-partial"
find testdata/forward -name '*.bin' -exec cp {} "$work/forward"/ \; 2>/dev/null || true
python3 - "$work/syslog" <<'PY'
import json, sys
for i, line in enumerate(open("testdata/syslog/corpus.jsonl", encoding="utf-8")):
    text = json.loads(line)["line"].encode()
    open(f"{sys.argv[1]}/line{i}", "wb").write(text)
    open(f"{sys.argv[1]}/framed{i}", "wb").write(b"%d " % len(text) + text + text + b"\n")
PY
cd fuzz
for t in "${targets[@]}"; do
  case $t in forward_*) corpus=$work/forward ;; disk_*) corpus=$work/codec ;; cri_*) corpus=$work/cri ;; wal_*) corpus=$work/wal ;; *) corpus=$work/syslog ;; esac
  # FUZZ_CORPUS=DIR keeps each target's corpus in DIR/TARGET across runs (long
  # runs resume where they stopped); the seeds above are added to it.
  if [ -n "${FUZZ_CORPUS:-}" ]; then
    mkdir -p "$FUZZ_CORPUS/$t"
    cp -n "$corpus"/* "$FUZZ_CORPUS/$t"/ 2>/dev/null || true
    corpus=$FUZZ_CORPUS/$t
  fi
  echo "fuzz: $t for ${secs}s"
  CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}/fuzz" \
    RUSTC_BOOTSTRAP=1 cargo fuzz run "$t" "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -15
done
