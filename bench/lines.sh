#!/usr/bin/env bash
# End-to-end line throughput: pipe → file and exec → null with 100-byte lines,
# against `cat` copying the same bytes into a file in the same run (the baseline).
#   bench/lines.sh [LINES]      (default 2,000,000 lines = 200 MB)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
cargo build --release -q -p sluice
BIN="$CARGO_TARGET_DIR/release/sluice"
W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "%099d\n", i }' > "$W/input"
BYTES=$(stat -c %s "$W/input")
now() { date +%s.%N; }
report() { # name seconds
  awk -v name="$1" -v s="$2" -v n="$N" -v b="$BYTES" -v base="${3:-}" 'BEGIN {
    printf "%-16s %7.3f s  %10.0f lines/s  %8.1f MB/s", name, s, n / s, b / s / 1e6;
    if (base != "") printf "  %5.2fx cat", s / base;
    printf "\n" }'
}
# Baseline: cat into a file, including the fsync sluice does at stop.
sync; t0=$(now); cat "$W/input" > "$W/cat.out"; sync "$W/cat.out"; t1=$(now)
CAT=$(echo "$t1 - $t0" | bc -l); report "cat > file" "$CAT"

cat > "$W/pipe.toml" <<CFG
data_dir = "$W/data"
[sources.p]
type = "pipe"
path = "$W/in.fifo"
[sinks.f]
type = "file"
inputs = ["p"]
path = "$W/pipe.out"
CFG
"$BIN" run --config "$W/pipe.toml" 2> "$W/pipe.log" & PID=$!
while [ ! -p "$W/in.fifo" ]; do sleep 0.01; done
t0=$(now); cat "$W/input" > "$W/in.fifo"
while [ "$(stat -c %s "$W/pipe.out" 2>/dev/null || echo 0)" -lt "$BYTES" ]; do sleep 0.005; done
kill -TERM $PID; wait $PID; t1=$(now)
cmp -s "$W/input" "$W/pipe.out" || { echo "pipe output differs"; exit 1; }
report "pipe -> file" "$(echo "$t1 - $t0" | bc -l)" "$CAT"

cat > "$W/exec.toml" <<CFG
data_dir = "$W/data"
[sources.e]
type = "exec"
command = ["cat", "$W/input"]
restart = "never"
[sinks.n]
type = "null"
inputs = ["e"]
CFG
t0=$(now); /usr/bin/time -f "%M" -o "$W/rss" "$BIN" run --config "$W/exec.toml" 2> "$W/exec.log"; t1=$(now)
report "exec -> null" "$(echo "$t1 - $t0" | bc -l)" "$CAT"
echo "peak RSS exec -> null: $(cat "$W/rss") KiB"
