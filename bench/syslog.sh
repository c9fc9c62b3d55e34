#!/usr/bin/env bash
# End-to-end syslog benchmark: bench/forward-load's syslog generator writes
# MESSAGES lines of 100 B (RFC 3164 newline-framed, and RFC 5424 octet-counted)
# over 1 and 16 TCP connections into sluice's syslog source → null sink
# (KAFKA=1: also → kafka, lz4, linger 50 ms, acks all + idempotence, on a local
# Apache Kafka broker). The time is from the first write until sluice's
# `sluice_component_received_events_total` (read from its API every 20 ms) shows
# every message; sluice's CPU seconds over the same span. Baseline in the same
# run: the same bytes over one connection into a process that copies them to
# /dev/null without parsing (forward-load sink).
#
#   bench/syslog.sh                   # 2,000,000 messages per run
#   MESSAGES=500000 bench/syslog.sh
#
# Prints key=value lines: messages/s, sluice CPU s per million, peak RSS.
set -euo pipefail

MESSAGES=${MESSAGES:-2000000}
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
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"

start_sluice() { # SINK_TOML
  cat >"$WORK/sluice.toml" <<TOML
data_dir = "$WORK/data"
[api]
address = "127.0.0.1:0"
[sources.sys]
type = "syslog"
mode = "tcp"
address = "127.0.0.1:0"
timezone = "UTC"
$1
TOML
  : >"$WORK/sluice.log"
  SLUICE_LOG=info NO_COLOR=1 "$SLUICE" run --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
  PID=$!
  for _ in $(seq 200); do
    ADDR=$(sed -n 's/.*Syslog source listening.*address=\([0-9.:]*\).*/\1/p' "$WORK/sluice.log")
    API=$(sed -n 's/.*API listening\. address=\([0-9.:]*\).*/\1/p' "$WORK/sluice.log")
    [ -n "$ADDR" ] && [ -n "$API" ] && return 0
    sleep 0.05
  done
  echo "bench/syslog.sh: sluice did not start:" >&2; cat "$WORK/sluice.log" >&2; exit 1
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }

run() { # NAME SINK_TOML CONNS FLAGS
  start_sluice "$2"
  local t0 c0 t1 c1 got peak hz
  hz=$(getconf CLK_TCK)
  c0=$(cpu_ticks); t0=$(date +%s.%N)
  "$LOAD" syslog "$ADDR" "$MESSAGES" --conns "$3" $4 >"$WORK/gen.out"
  while :; do
    got=$(python3 -c 'import sys,urllib.request
t=urllib.request.urlopen("http://"+sys.argv[1]+"/metrics").read().decode()
print(next((int(float(l.rsplit(" ",1)[1])) for l in t.splitlines() if l.startswith("sluice_component_received_events_total{") and "component_id=\"sys\"" in l),0))' "$API")
    [ "$got" -ge "$MESSAGES" ] && break
    sleep 0.02
  done
  t1=$(date +%s.%N); c1=$(cpu_ticks)
  peak=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$PID/status")
  kill -TERM "$PID"; wait "$PID" || true; PID=""
  printf '%-16s conns=%-3s messages_per_sec=%.0f cpu_s_per_million=%.2f peak_rss_mb=%s\n' \
    "$1" "$3" "$(echo "$MESSAGES / ($t1 - $t0)" | bc -l)" \
    "$(echo "($c1 - $c0) / $hz / ($MESSAGES / 1000000)" | bc -l)" "$peak"
}

echo "# $MESSAGES messages of 100 B, $(nproc) cores"
NULL='[sinks.out]
type = "null"
inputs = ["sys"]'
for conns in 1 16; do
  run "3164→null" "$NULL" "$conns" ""
  run "5424-octet→null" "$NULL" "$conns" "--octet"
done
if [ -n "${KAFKA:-}" ]; then
  start_kafka
  topic="sysbench-$RANDOM"
  kafka_topic "$topic" 1
  run "3164→kafka" "[sinks.out]
type = \"kafka\"
inputs = [\"sys\"]
brokers = \"127.0.0.1:$KAFKA_PORT\"
topic = \"$topic\"
compression = \"lz4\"
[sinks.out.librdkafka]
\"linger.ms\" = \"50\"
\"batch.num.messages\" = \"10000\"
\"queue.buffering.max.messages\" = \"1000000\"" 1 ""
fi

port=$(free_port)
"$LOAD" sink "127.0.0.1:$port" /dev/null >"$WORK/sink.out" &
SINK=$!
for _ in $(seq 100); do grep -q listening "$WORK/sink.out" 2>/dev/null && break; sleep 0.05; done
"$LOAD" syslog "127.0.0.1:$port" "$MESSAGES" --conns 1 >/dev/null
wait "$SINK"
secs=$(tail -1 "$WORK/sink.out" | sed -n 's/.*secs=\([0-9.]*\).*/\1/p')
printf '%-16s conns=1   messages_per_sec=%.0f (raw TCP copy, no parsing)\n' "baseline→null" "$(echo "$MESSAGES / $secs" | bc -l)"
