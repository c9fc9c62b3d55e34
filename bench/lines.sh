#!/usr/bin/env bash
# End-to-end line throughput: pipe → file and exec → null with 100-byte lines,
# against `cat` copying the same bytes into a file in the same round (the
# baseline). The machines are noisy, so the three runs are interleaved over
# several rounds and the per-round ratios' median is the figure.
#   bench/lines.sh [LINES] [ROUNDS]     (default 2,000,000 lines = 200 MB, 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-2000000}
ROUNDS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
cargo build --release -q -p sluice
BIN="$CARGO_TARGET_DIR/release/sluice"
W=$(mktemp -d)
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; rm -rf "$W"' EXIT
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "%099d\n", i }' > "$W/input"
BYTES=$(stat -c %s "$W/input")
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }
cpu() { awk '{ printf "%.2f", $1 + $2 }' "$1"; }

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

printf "%-6s %-22s %-34s %-34s\n" round "cat > file" "pipe -> file" "exec -> null"
: > "$W/ratios"
for r in $(seq "$ROUNDS"); do
  # Baseline: cat into a file, including the fsync sluice does at stop.
  rm -f "$W/cat.out"; sync
  t0=$(now); cat "$W/input" > "$W/cat.out"; sync "$W/cat.out"; CAT=$(since "$t0")

  rm -f "$W/pipe.out" "$W/in.fifo"
  /usr/bin/time -f "%U %S" -o "$W/pipe.cpu" "$BIN" run --config "$W/pipe.toml" 2> "$W/pipe.log" &
  PID=$!
  while [ ! -p "$W/in.fifo" ]; do sleep 0.01; done
  t0=$(now); cat "$W/input" > "$W/in.fifo"
  while [ "$(stat -c %s "$W/pipe.out" 2>/dev/null || echo 0)" -lt "$BYTES" ]; do sleep 0.005; done
  pkill -TERM -f "^$BIN run --config $W/pipe.toml" || true
  wait $PID; PID=; PIPE=$(since "$t0")
  cmp -s "$W/input" "$W/pipe.out" || { echo "pipe output differs"; exit 1; }

  t0=$(now)
  /usr/bin/time -f "%U %S" -o "$W/exec.cpu" "$BIN" run --config "$W/exec.toml" 2> "$W/exec.log"
  EXEC=$(since "$t0")

  awk -v r="$r" -v c="$CAT" -v p="$PIPE" -v e="$EXEC" -v n="$N" -v b="$BYTES" \
      -v pc="$(cpu "$W/pipe.cpu")" -v ec="$(cpu "$W/exec.cpu")" 'BEGIN {
    printf "%-6s %6.3f s %5.0f MB/s        %6.3f s %4.2f M lines/s %5.2fx cat  %6.3f s %4.2f M lines/s %5.2fx cat\n",
      r, c, b / c / 1e6, p, n / p / 1e6, p / c, e, n / e / 1e6, e / c
    printf "%s %s %s %s\n", p / c, e / c, pc, ec > "/dev/stderr" }' 2>> "$W/ratios"
done
sort -n -k1 "$W/ratios" | awk '{ p[NR] = $1 } END { printf "median pipe -> file: %.2fx cat\n", p[int((NR + 1) / 2)] }'
sort -n -k2 "$W/ratios" | awk '{ e[NR] = $2 } END { printf "median exec -> null: %.2fx cat\n", e[int((NR + 1) / 2)] }'
sort -n -k3 "$W/ratios" | awk -v n="$N" '{ c[NR] = $3 } END { printf "median sluice CPU, pipe -> file: %.2f s (%.0f ns per line)\n", c[int((NR + 1) / 2)], c[int((NR + 1) / 2)] / n * 1e9 }'
/usr/bin/time -f %M -o "$W/exec.rss" "$BIN" run --config "$W/exec.toml" 2> "$W/exec.log"
echo "peak RSS exec -> null: $(cat "$W/exec.rss") KiB"
