#!/usr/bin/env bash
# Durable acknowledgements: how fast a windowed forward client gets its
# `{"ack": chunk}` back. bench/forward-load sends PackedForward requests of CHUNK
# events (~100 B each), every one with a chunk option, and keeps exactly WINDOW
# of them waiting for their ack (as Fluentd's out_forward with
# require_ack_response, with more chunks); ack latency is measured per request
# from the end of its write to its ack.
#
# Pipelines, each with a disk buffer (acknowledgements = "disk": the ack waits
# for the group's fdatasync; fsync = "interval", the default, so this measures
# group commit) and, as the baseline in the same run, a memory buffer
# (acknowledgements = "end_to_end": null acks on delivery, file after its
# group's write + fdatasync, kafka on the broker's confirmation):
#   forward → null     forward → file     forward → kafka (SINKS="null file kafka")
# For each, WINDOWS × CHUNKS runs; the disk rows print their ratio to the memory
# row of the same sink, window and chunk. The raw fdatasync latency of the data
# directory's device (10 KB appends, bench/lib/fsync_probe.py) is measured before
# each pipeline and at the end (on a shared machine it moves with the others'
# writes, so it is taken next to the runs it explains).
#
#   bench/acks.sh                              # 100,000 events per run, null and file
#   EVENTS=20000 WINDOWS="8" CHUNKS="100" bench/acks.sh
#   SINKS="null file kafka" bench/acks.sh      # kafka needs Apache Kafka (scripts/install-deps.sh)
#
# Goals (idle machine): window 8 × 100 events, disk-buffered forward → null acked
# at >= 0.5× the memory-buffered rate, ack p99 <= 2 × device fsync p99 + 2 ms.
set -euo pipefail

EVENTS=${EVENTS:-100000}
WINDOWS=${WINDOWS:-"1 8 16"}
CHUNKS=${CHUNKS:-"100 1000"}
SINKS=${SINKS-"null file"}
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

# The data dir (disk buffers, file output, the probe) on the device under test.
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/sluice-acks.XXXXXX")
PID=""
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  stop_kafka
  rm -rf "$WORK"
}
trap cleanup EXIT
TOPICS=0

# start_sluice SINK BUFFER: writes a config, starts sluice, sets PID and ADDR.
start_sluice() {
  local sink buffer
  case "$1" in
    null) sink='type = "null"' ;;
    file) sink="type = \"file\"
path = \"$WORK/out.log\"
encoding = \"raw\"" ;;
    kafka)
      [ -n "$KAFKA_PID" ] || start_kafka
      TOPICS=$((TOPICS + 1))
      kafka_topic "acks-$TOPICS"
      sink="type = \"kafka\"
brokers = \"127.0.0.1:$KAFKA_PORT\"
topic = \"acks-$TOPICS\"
encoding = \"raw\"
compression = \"none\"" ;;
  esac
  case "$2" in
    memory) buffer='acknowledgements = "end_to_end"' ;;
    disk) buffer='acknowledgements = "disk"
[sinks.out.buffer]
type = "disk"
fsync = "interval"' ;;
  esac
  cat >"$WORK/sluice.toml" <<TOML
data_dir = "$WORK/data"
[sources.fw]
type = "forward"
address = "127.0.0.1:0"
[sinks.out]
inputs = ["fw"]
$sink
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
  echo "bench/acks.sh: sluice did not start:" >&2; cat "$WORK/sluice.log" >&2; exit 1
}

stop_sluice() {
  kill -TERM "$PID"; wait "$PID" || true; PID=""
  rm -rf "$WORK/data" "$WORK/out.log"
}

field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p" <<<"$2"; }

probe() {
  printf '%-36s %s\n' "device fdatasync, $1:" "$(python3 "$ROOT/bench/lib/fsync_probe.py" "$WORK/probe" 300 10000)"
}

echo "# $EVENTS events per run, ~100 B each, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# data dir $WORK on $(df --output=source "$WORK" | tail -1)"
for sink in $SINKS; do
  for buffer in memory disk; do
    probe "before $sink/$buffer"
    start_sluice "$sink" "$buffer"
    for window in $WINDOWS; do
      for chunk in $CHUNKS; do
        line=$("$LOAD" send "$ADDR" "$EVENTS" --per-frame "$chunk" --window "$window")
        rate=$(field events_per_sec "$line")
        key="$sink-$window-$chunk"
        extra=""
        if [ "$buffer" = memory ]; then
          declare "BASE_${key//-/_}=$rate"
        else
          base_var="BASE_${key//-/_}"
          extra=$(printf ' ratio_to_memory=%.2f' "$(echo "$rate / ${!base_var}" | bc -l)")
        fi
        printf 'forward→%-6s %-7s window=%-3s chunk=%-5s events_per_sec=%-9s ack_p50_ms=%-6s ack_p99_ms=%-6s%s\n' \
          "$sink" "$buffer" "$window" "$chunk" "$rate" \
          "$(field ack_p50_ms "$line")" "$(field ack_p99_ms "$line")" "$extra"
      done
    done
    stop_sluice
  done
done
probe "at the end"
