#!/usr/bin/env bash
# What the forward source's chunk de-duplication (`dedupe_window`) costs: the
# same windowed forward client (bench/forward-load, every request with a fresh
# chunk id) against sluice with the window off (`max_chunks = 0`, the baseline)
# and on (the default), alternately in the same run, forward → null:
#   memory buffer: ids kept in memory only (a lock, a map insert per chunk);
#   disk buffer:   ids also appended to the journal (one write(2) per chunk).
# Tiny chunks (1 event) show the per-chunk cost at its largest; 100-event
# chunks are what Fluentd-like clients send. Each row prints on/off.
#
#   bench/dedupe.sh                          # 100,000 events per run, 3 rounds
#   EVENTS=20000 ROUNDS=1 bench/dedupe.sh
set -euo pipefail

EVENTS=${EVENTS:-100000}
ROUNDS=${ROUNDS:-3}
CASES=${CASES:-"1:1 8:1 8:100"}   # window:chunk
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=${SLUICE_BIN:-$TARGET/release/sluice}
LOAD_TARGET=${LOAD_TARGET:-$TARGET/forward-load}
LOAD=$LOAD_TARGET/release/forward-load
export PATH="$HOME/.cargo/bin:$PATH"

if [ ! -x "$SLUICE" ]; then
  echo "# building sluice (release)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p sluice --bin sluice)
fi
echo "# building the load generator"
(cd "$ROOT/bench/forward-load" && CARGO_TARGET_DIR="$LOAD_TARGET" cargo build --release -q)

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/sluice-dedupe.XXXXXX")
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_sluice BUFFER DEDUPE: sets PID and ADDR.
start_sluice() {
  local buffer window
  case "$1" in
    memory) buffer='acknowledgements = "end_to_end"' ;;
    disk) buffer='acknowledgements = "disk"
[sinks.out.buffer]
type = "disk"' ;;
  esac
  case "$2" in
    off) window='dedupe_window = { max_chunks = 0 }' ;;
    on) window='' ;;
  esac
  cat >"$WORK/sluice.toml" <<TOML
data_dir = "$WORK/data"
[sources.fw]
type = "forward"
address = "127.0.0.1:0"
$window
[sinks.out]
type = "null"
inputs = ["fw"]
$buffer
TOML
  : >"$WORK/sluice.log"
  SLUICE_LOG=info NO_COLOR=1 "$SLUICE" run --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
  PID=$!
  for _ in $(seq 400); do
    ADDR=$(sed -n 's/.*Forward source listening\. address=\([0-9.:]*\).*/\1/p' "$WORK/sluice.log")
    [ -n "$ADDR" ] && return 0
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench/dedupe.sh: sluice did not start:" >&2; cat "$WORK/sluice.log" >&2; exit 1
}

stop_sluice() {
  kill -TERM "$PID"; wait "$PID" || true; PID=""
  rm -rf "$WORK/data"
}

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

echo "# $EVENTS events per run, ~100 B each, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for round in $(seq "$ROUNDS"); do
  for buffer in memory disk; do
    for case in $CASES; do
      window=${case%%:*}
      chunk=${case##*:}
      declare -A rate=()
      for dedupe in off on; do
        start_sluice "$buffer" "$dedupe"
        line=$("$LOAD" send "$ADDR" "$EVENTS" --per-frame "$chunk" --window "$window")
        stop_sluice
        rate[$dedupe]=$(field events_per_sec "$line")
        printf 'round=%s forward→null %-6s window=%-3s chunk=%-4s dedupe=%-3s events_per_sec=%-9s ack_p50_ms=%-6s ack_p99_ms=%s\n' \
          "$round" "$buffer" "$window" "$chunk" "$dedupe" "${rate[$dedupe]}" \
          "$(field ack_p50_ms "$line")" "$(field ack_p99_ms "$line")"
      done
      printf 'round=%s forward→null %-6s window=%-3s chunk=%-4s on/off=%.2f\n' \
        "$round" "$buffer" "$window" "$chunk" "$(echo "${rate[on]} / ${rate[off]}" | bc -l)"
    done
  done
done
echo "# load average at the end $(cut -d' ' -f1-3 /proc/loadavg)"
