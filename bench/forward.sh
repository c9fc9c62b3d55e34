#!/usr/bin/env bash
# End-to-end forward source benchmark: bench/forward-load (a Rust generator using
# the proto crate's encoder) sends PackedForward requests of PER_FRAME records of
# ~100 bytes over one loopback connection into sluice's forward source, with
# sinks null and file (json). Two ways of sending:
#   acked   every request carries a chunk, WINDOW requests may await their ack
#           (the ack is written only after the sink delivered: null = at once,
#           file = after write + fsync); ack latency p50/p99 per request
#   stream  no chunk except the last request, whose ack marks the end
# Baseline in the same run: the same bytes pushed over loopback into a process
# that copies them to /dev/null or to a file without decoding (forward-load sink).
#
#   bench/forward.sh                     # 3,000,000 events per run
#   EVENTS=1000000 WINDOW=1 bench/forward.sh
#   KAFKA=1 bench/forward.sh             # also forward→kafka: a local Apache Kafka
#         broker (bench/lib/kafka.sh), a fresh topic of KAFKA_PARTITIONS (default 1)
#         per run, lz4, linger 50 ms, acks all + idempotence; each chunk is acked
#         only once the broker confirmed all of its records
#   COMPARE_BIN=/path/to/other/sluice ROUNDS=3 bench/forward.sh
#         only forward→null acked, ROUNDS times, this build then the other one
#         back to back in each round (same load), with the ratio per round
#
# Prints key=value lines: events/s, wire MB/s, ack p50/p99 (ms), sluice peak RSS.
set -euo pipefail

EVENTS=${EVENTS:-3000000}
PER_FRAME=${PER_FRAME:-1000}
WINDOW=${WINDOW:-16}
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

WORK=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  [ -n "${KAFKA:-}" ] && stop_kafka
  rm -rf "$WORK"
}
trap cleanup EXIT

# start_sluice SINK_TOML: writes a config, starts sluice, sets PID and ADDR.
start_sluice() {
  cat >"$WORK/sluice.toml" <<TOML
data_dir = "$WORK/data"
[sources.fw]
type = "forward"
address = "127.0.0.1:0"
$1
TOML
  : >"$WORK/sluice.log"
  SLUICE_LOG=info NO_COLOR=1 "$SLUICE" run --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
  PID=$!
  for _ in $(seq 200); do
    ADDR=$(sed -n 's/.*Forward source listening\. address=\([0-9.:]*\).*/\1/p' "$WORK/sluice.log")
    [ -n "$ADDR" ] && return 0
    sleep 0.05
  done
  echo "bench/forward.sh: sluice did not start:" >&2; cat "$WORK/sluice.log" >&2; exit 1
}

stop_sluice() {
  local peak
  peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$PID/status")
  kill -TERM "$PID"; wait "$PID" || true; PID=""
  echo "  sluice_peak_rss_mb=$peak"
}

run() { # NAME SINK_TOML
  for mode in acked stream; do
    start_sluice "$2"
    flags="--per-frame $PER_FRAME --window $WINDOW"
    [ "$mode" = stream ] && flags="$flags --no-ack"
    printf '%-14s %-7s ' "$1" "$mode"
    "$LOAD" send "$ADDR" "$EVENTS" $flags
    stop_sluice
    rm -f "$WORK"/out.json
  done
}

echo "# $EVENTS events, $PER_FRAME records of ~100 B per request, window $WINDOW, $(nproc) cores"
NULL_SINK='[sinks.out]
type = "null"
inputs = ["fw"]'
if [ -n "${COMPARE_BIN:-}" ]; then
  # acked_rate BIN OUT: one forward→null acked run; the generator's line and the
  # peak RSS go to OUT.
  acked_rate() {
    local keep=$SLUICE
    SLUICE=$1
    start_sluice "$NULL_SINK"
    SLUICE=$keep
    "$LOAD" send "$ADDR" "$EVENTS" --per-frame "$PER_FRAME" --window "$WINDOW" >"$2"
    stop_sluice >>"$2"
  }
  rate() { sed -n 's/.*events_per_sec=\([0-9]*\).*/\1/p' "$1"; }
  for round in $(seq "${ROUNDS:-3}"); do
    acked_rate "$SLUICE" "$WORK/this"
    acked_rate "$COMPARE_BIN" "$WORK/other"
    echo "round $round this:  $(tr -s ' \n' ' ' <"$WORK/this")"
    echo "round $round other: $(tr -s ' \n' ' ' <"$WORK/other")"
    printf 'round %s ratio this/other=%.2f\n' "$round" \
      "$(echo "$(rate "$WORK/this") / $(rate "$WORK/other")" | bc -l)"
  done
  exit 0
fi
run "forward→null" "$NULL_SINK"
if [ -n "${KAFKA:-}" ]; then
  # shellcheck source=bench/lib/kafka.sh
  . "$ROOT/bench/lib/kafka.sh"
  start_kafka
  for mode in acked stream; do
    topic="fwbench-$mode-$RANDOM"
    kafka_topic "$topic" "${KAFKA_PARTITIONS:-1}"
    start_sluice "[sinks.out]
type = \"kafka\"
inputs = [\"fw\"]
brokers = \"127.0.0.1:$KAFKA_PORT\"
topic = \"$topic\"
compression = \"lz4\"
acks = \"all\"
[sinks.out.librdkafka]
\"linger.ms\" = \"50\"
\"batch.num.messages\" = \"10000\"
\"queue.buffering.max.messages\" = \"1000000\""
    flags="--per-frame $PER_FRAME --window $WINDOW"
    [ "$mode" = stream ] && flags="$flags --no-ack"
    printf '%-14s %-7s ' "forward→kafka" "$mode"
    "$LOAD" send "$ADDR" "$EVENTS" $flags
    stop_sluice
  done
fi
run "forward→file" "[sinks.out]
type = \"file\"
inputs = [\"fw\"]
path = \"$WORK/out.json\"
encoding = \"json\""

for out in /dev/null "$WORK/raw.bin"; do
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$LOAD" sink "127.0.0.1:$port" "$out" >"$WORK/sink.out" &
  SINK=$!
  for _ in $(seq 100); do grep -q listening "$WORK/sink.out" 2>/dev/null && break; sleep 0.05; done
  "$LOAD" send "127.0.0.1:$port" "$EVENTS" --per-frame "$PER_FRAME" --raw >/dev/null
  wait "$SINK"
  line=$(tail -1 "$WORK/sink.out")
  secs=$(echo "$line" | sed -n 's/.*secs=\([0-9.]*\).*/\1/p')
  printf 'baseline→%-9s raw     %s events_per_sec=%.0f\n' "$(basename "$out")" "$line" "$(echo "$EVENTS / $secs" | bc -l)"
  rm -f "$WORK/raw.bin"
done
