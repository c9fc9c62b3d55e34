#!/usr/bin/env bash
# The cost of `[api]` on the hottest paths counted in instructions, which a busy
# or noisy machine does not change: pipe → file and forward → null (bench/forward-load,
# 1,000 events per request, 16 in flight, acked after delivery), each with `[api]`
# off and on, sluice run under valgrind's callgrind (every thread's instructions
# summed). While on, /metrics is scraped once per second of the (slowed) run —
# under callgrind a second is ~20 ms of native time, so that is ~5× the rate
# bench/api.sh scrapes at and ~750× Prometheus' default 15 s. Wall and CPU on a
# quiet machine: bench/api.sh; this script gives the figure the noise hides.
#   [SLUICE_BIN=…] bench/api-instructions.sh [LINES] [ROUNDS]   (default 300,000 lines, 2 rounds)
# Prints each run's instruction count and the on/off ratio per path.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-300000}
ROUNDS=${2:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
BIN=${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}
[ -n "${SLUICE_BIN:-}" ] || cargo build --release -q -p sluice
command -v valgrind >/dev/null || { echo "bench/api-instructions.sh: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
W=$(mktemp -d)
PID=
SCRAPER=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; [ -n "$SCRAPER" ] && kill $SCRAPER 2>/dev/null; rm -rf "$W"' EXIT
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "%099d\n", i }' > "$W/plain"
SIZE=$(stat -c %s "$W/plain")
PORT=$((20000 + RANDOM % 20000))
LOAD_TARGET="$CARGO_TARGET_DIR/forward-load"
(cd bench/forward-load && CARGO_TARGET_DIR="$LOAD_TARGET" cargo build --release -q)
LOAD="$LOAD_TARGET/release/forward-load"

config() { # NAME API(0|1) KIND(pipe|forward)
  {
    echo "data_dir = \"$W/data\""
    [ "$2" = 1 ] && printf '[api]\naddress = "127.0.0.1:%s"\n' "$PORT"
    if [ "$3" = pipe ]; then
      printf '[sources.p]\ntype = "pipe"\npath = "%s/in.fifo"\n' "$W"
      printf '[sinks.f]\ntype = "file"\ninputs = ["p"]\npath = "%s/out"\n' "$W"
    else
      printf '[sources.fw]\ntype = "forward"\naddress = "127.0.0.1:0"\n'
      printf '[sinks.n]\ntype = "null"\ninputs = ["fw"]\n'
    fi
  } > "$W/$1.toml"
}
config pipe0 0 pipe; config pipe1 1 pipe; config fwd0 0 forward; config fwd1 1 forward

start() { # NAME API(0|1): sluice under callgrind; the scraper while on
  rm -f "$W/out" "$W/in.fifo" "$W/cg.out"
  valgrind --tool=callgrind --callgrind-out-file="$W/cg.out" --dump-instr=no \
    "$BIN" run --config "$W/$1.toml" 2> "$W/$1.log" &
  PID=$!
  : > "$W/scrapes"
  if [ "$2" = 1 ]; then
    (while sleep 1; do curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics" && echo >> "$W/scrapes"; done) &
    SCRAPER=$!
  fi
}

stop() { # NAME → prints "instructions scrapes"
  kill -TERM $PID; wait $PID || true; PID=
  if [ -n "$SCRAPER" ]; then kill $SCRAPER; wait $SCRAPER 2>/dev/null || true; SCRAPER=; fi
  local ir
  ir=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$W/$1.log")
  [ -n "$ir" ] || { echo "no instruction count in $1's log:" >&2; tail -20 "$W/$1.log" >&2; exit 1; }
  echo "$ir $(wc -l < "$W/scrapes")"
}

pipe() { # API(0|1)
  start "pipe$1" "$1"
  while [ ! -p "$W/in.fifo" ]; do sleep 0.05; done
  cat "$W/plain" > "$W/in.fifo"
  while [ "$(stat -c %s "$W/out" 2>/dev/null || echo 0)" -lt "$SIZE" ]; do sleep 0.05; done
  stop "pipe$1"
}

fwd() { # API(0|1)
  start "fwd$1" "$1"
  local addr=
  while [ -z "$addr" ]; do
    sleep 0.05
    addr=$(sed -n 's/.*Forward source listening\. address=\([0-9.:]*\).*/\1/p' "$W/fwd$1.log")
  done
  "$LOAD" send "$addr" "$N" --per-frame 1000 --window 16 > /dev/null
  stop "fwd$1"
}

echo "# $N events of 100 B per run; instructions of sluice (all threads, callgrind); on: [api] scraped every second"
printf "%-6s %-16s %16s %16s %8s %8s\n" round path "off" "on" scrapes "on/off"
: > "$W/ratios"
for r in $(seq "$ROUNDS"); do
  for path in pipe fwd; do
    read -r off _ <<<"$($path 0)"
    read -r on scrapes <<<"$($path 1)"
    ratio=$(echo "$on / $off" | bc -l)
    printf "%-6s %-16s %16s %16s %8s %8.4f\n" "$r" "$path" "$off" "$on" "$scrapes" "$ratio"
    echo "$path $ratio" >> "$W/ratios"
  done
done
for path in pipe fwd; do
  awk -v p="$path" '$1 == p { s += $2; n++; if ($2 > m) m = $2 } END {
    printf "%s: mean on/off %.4f, worst %.4f (instructions)\n", (p == "pipe" ? "pipe -> file" : "forward -> null"), s / n, m }' "$W/ratios"
done
