#!/usr/bin/env bash
# File source end to end: sluice tails a directory (type = "file") into a file
# sink while `cp` writes the input into it, against `cat` copying the same bytes
# into a file in the same round (the baseline). Two shapes: one file of LINES
# 100-byte lines, and 100 files of LINES/100 lines each. Rounds are interleaved
# (noisy machine) and the median per-round ratio is the figure.
#   bench/file.sh [LINES] [ROUNDS]     (default 1,000,000 lines = 100 MB, 3 rounds)
# Timed: from the start of the copy into the watched directory until the sink's
# output holds every byte (polled every 5 ms), so discovery, reading, framing,
# the pipeline and the sink's writes are all inside.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
ROUNDS=${2:-3}
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
BIN=${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}
[ -n "${SLUICE_BIN:-}" ] || cargo build --release -q -p sluice --bin sluice
W=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$W"' EXIT
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "%099d\n", i }' > "$W/input"
mkdir -p "$W/parts"
split -n l/100 -d -a 3 --additional-suffix=.log "$W/input" "$W/parts/p"
BYTES=$(stat -c %s "$W/input")
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

run_sluice() { # $1: shape (one | many)
  rm -rf "$W/logs" "$W/data" "$W/out.log"; mkdir -p "$W/logs"
  cat > "$W/file.toml" <<CFG
data_dir = "$W/data"
[sources.f]
type = "file"
include = ["$W/logs/*.log"]
[sinks.out]
type = "file"
inputs = ["f"]
path = "$W/out.log"
CFG
  "$BIN" run --config "$W/file.toml" 2> "$W/sluice.log" &
  PID=$!
  until grep -q "Sluice started" "$W/sluice.log"; do sleep 0.01; done
  t0=$(now)
  if [ "$1" = one ]; then
    cp "$W/input" "$W/logs/app.log"
  else
    # One process writes all 100 files (no process start per file in the timing).
    tar -C "$W/parts" -cf - . | tar -C "$W/logs" -xf -
  fi
  while [ "$(stat -c %s "$W/out.log" 2>/dev/null || echo 0)" -lt "$BYTES" ]; do sleep 0.005; done
  since "$t0"
  kill -TERM $PID; wait $PID || true; PID=
}

printf "%-6s %-22s %-34s %-34s\n" round "cat > file" "1 file -> file" "100 files -> file"
: > "$W/ratios"
for r in $(seq "$ROUNDS"); do
  rm -f "$W/cat.out"; sync
  t0=$(now); cat "$W/input" > "$W/cat.out"; CAT=$(since "$t0")
  ONE=$(run_sluice one)
  MANY=$(run_sluice many)
  awk -v r="$r" -v c="$CAT" -v o="$ONE" -v m="$MANY" -v n="$N" -v b="$BYTES" 'BEGIN {
    printf "%-6s %6.3f s %5.0f MB/s        %6.3f s %4.2f M lines/s %5.2fx cat  %6.3f s %4.2f M lines/s %5.2fx cat\n",
      r, c, b / c / 1e6, o, n / o / 1e6, o / c, m, n / m / 1e6, m / c
    printf "%s %s\n", o / c, m / c > "/dev/stderr" }' 2>> "$W/ratios"
done
sort -n -k1 "$W/ratios" | awk '{ v[NR] = $1 } END { printf "median 1 file -> file: %.2fx cat\n", v[int((NR + 1) / 2)] }'
sort -n -k2 "$W/ratios" | awk '{ v[NR] = $2 } END { printf "median 100 files -> file: %.2fx cat\n", v[int((NR + 1) / 2)] }'
