#!/usr/bin/env bash
# Cost of exactly-once: sluice (disk buffer) → a local Apache Kafka broker
# (scripts/kafka-dev.sh, one for the whole run, a fresh topic per
# measurement), the Kafka sink with `exactly_once = true` (transactions at the
# default size and interval) against the same sink without it (the idempotent
# producer, acks=all), alternating REPEAT times in the same run, per source:
#   pipe     a FIFO → pipe source → disk buffer → kafka
#   forward  bench/forward-load (PackedForward requests of PER_FRAME events, each
#            with a chunk id, WINDOW of them awaiting their ack) → forward source
#            (acknowledgements = "disk": a chunk is acked once in the buffer) →
#            disk buffer → kafka
# Goal: exactly-once ≥ 0.9 of the idempotent rate.
#
#   bench/kafka-txn.sh                          # 1,000,000 events of 100 B, 3 runs each, both sources
#   COUNT=200000 REPEAT=1 SOURCES=forward bench/kafka-txn.sh
#   EXTRA='transaction_interval_ms = 100' bench/kafka-txn.sh   # another transaction size
#   SLUICE_LOG='info,sluice::sinks::kafka::service::txn=debug' KEEP_LOGS=DIR bench/kafka-txn.sh
#         # one line per transaction (events, open_ms, flush_ms, commit_ms); logs kept in DIR
#
# Measured: from the first byte sent (into the FIFO, or by the forward client)
# until sluice has exited after delivering everything (SIGTERM once it has read
# all input — the FIFO drained, or every chunk acked; the disk buffer then
# drains into Kafka, and with exactly_once the last transaction commits). Both
# use linger.ms = 5 (librdkafka's default) and lz4. Prints per source and mode
# the medians of events/s and CPU seconds per million events, the ratios per
# run; forward rows also give the client's acked rate (into the buffer).
# Needs: Java + Apache Kafka (scripts/install-deps.sh), python3 with
# confluent-kafka; builds the sluice release binary when missing (SLUICE_BIN
# for another one) and the load generator.
set -euo pipefail

COUNT=${COUNT:-1000000}
REPEAT=${REPEAT:-3}
SIZE=${SIZE:-100}
EXTRA=${EXTRA:-}
SOURCES=${SOURCES:-"pipe forward"}
PER_FRAME=${PER_FRAME:-1000}
WINDOW=${WINDOW:-16}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=${SLUICE_BIN:-$TARGET/release/sluice}
LOAD_TARGET=${LOAD_TARGET:-$TARGET/forward-load}
LOAD=$LOAD_TARGET/release/forward-load
export PATH="$HOME/.cargo/bin:$PATH"

[ -x /usr/bin/time ] || { echo "bench/kafka-txn.sh: /usr/bin/time missing (apt-get install time)" >&2; exit 2; }
if [ ! -x "$SLUICE" ]; then
  echo "# building sluice (release)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p sluice --bin sluice)
fi
if [[ " $SOURCES " == *" forward "* ]]; then
  echo "# building the load generator"
  (cd "$ROOT/bench/forward-load" && CARGO_TARGET_DIR="$LOAD_TARGET" cargo build --release -q)
fi

WORK=$(mktemp -d)
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"
cleanup() {
  stop_kafka
  rm -rf "$WORK"
}
trap cleanup EXIT
start_kafka

INPUT="$WORK/input.txt"
if [[ " $SOURCES " == *" pipe "* ]]; then
  python3 - "$COUNT" "$SIZE" "$INPUT" <<'EOF'
import sys
count, size, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(path, "wb", buffering=1 << 20) as out:
    for i in range(count):
        head = b"%012d " % i
        out.write(head + b"x" * max(0, size - len(head)) + b"\n")
EOF
fi

# config SOURCE MODE TOPIC: the sluice config of one measurement.
config() {
  echo "data_dir = \"$WORK/data\""
  echo "shutdown_timeout_secs = 300"
  echo "[sources.in]"
  case "$1" in
    pipe) echo 'type = "pipe"'; echo "path = \"$WORK/in.pipe\"" ;;
    forward) echo 'type = "forward"'; echo 'address = "127.0.0.1:0"' ;;
  esac
  echo "[sinks.k]"; echo 'type = "kafka"'; echo 'inputs = ["in"]'
  echo "brokers = \"127.0.0.1:$KAFKA_PORT\""; echo "topic = \"$3\""; echo 'encoding = "raw"'
  echo 'compression = "lz4"'; echo 'acks = "all"'
  if [ "$1" = forward ]; then echo 'acknowledgements = "disk"'; fi
  echo "checkpoint_topic = \"bench-txn-checkpoints\""
  if [ "$2" = exactly_once ]; then echo "exactly_once = true"; echo "$EXTRA"; fi
  echo "[sinks.k.buffer]"; echo 'type = "disk"'
}

# wait_log PATTERN: until sluice logged it (30 s at most).
wait_log() {
  for _ in $(seq 600); do grep -q "$1" "$WORK/sluice.log" 2>/dev/null && return 0; sleep 0.05; done
  echo "bench/kafka-txn.sh: sluice never logged \"$1\":" >&2; tail -20 "$WORK/sluice.log" >&2; exit 1
}

# feed SOURCE: send the input; prints the client's acked events/s (forward).
feed() {
  if [ "$1" = pipe ]; then
    cat "$INPUT" >"$WORK/in.pipe"
    python3 - "$WORK/in.pipe" <<'EOF'
import fcntl, os, struct, sys, termios, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0] > 0:
    time.sleep(0.005)
EOF
    echo 0
  else
    local addr line
    addr=$(sed -n 's/.*Forward source listening\. address=\([0-9.:]*\).*/\1/p' "$WORK/sluice.log")
    line=$("$LOAD" send "$addr" "$COUNT" --per-frame "$PER_FRAME" --window "$WINDOW" --record-bytes "$SIZE")
    sed -n 's/.*events_per_sec=\([0-9]*\).*/\1/p' <<<"$line"
  fi
}

RESULTS="$WORK/results"
: >"$RESULTS"
for SOURCE in $SOURCES; do
  for RUN in $(seq "$REPEAT"); do
    for MODE in idempotent exactly_once; do
      TOPIC="bench-txn-$SOURCE-$RUN-$MODE"
      kafka_topic "$TOPIC"
      rm -f "$WORK/in.pipe"
      if [ "$SOURCE" = pipe ]; then mkfifo "$WORK/in.pipe"; fi
      rm -rf "$WORK/data"
      config "$SOURCE" "$MODE" "$TOPIC" >"$WORK/sluice.toml"
      SLUICE_LOG=${SLUICE_LOG:-info} NO_COLOR=1 /usr/bin/time -f "%e %U %S %M" -o "$WORK/sluice.time" \
        "$SLUICE" run --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
      SPID=$!
      case "$SOURCE" in
        pipe) wait_log "Reading FIFO" ;;
        forward) wait_log "Forward source listening" ;;
      esac
      if [ "$MODE" = exactly_once ]; then wait_log "transactions ready"; fi
      T0=$(date +%s.%N)
      CLIENT=$(feed "$SOURCE")
      SLUICE_PID=$(pgrep -P "$SPID" -x sluice || true)
      kill -TERM "${SLUICE_PID:-$SPID}"
      wait "$SPID" || { echo "sluice failed:"; tail -20 "$WORK/sluice.log"; exit 1; }
      T1=$(date +%s.%N)
      if [ -n "${KEEP_LOGS:-}" ]; then mkdir -p "$KEEP_LOGS"; cp "$WORK/sluice.log" "$KEEP_LOGS/$TOPIC.log"; fi
      OUT=$(grep -o 'Counters sinks.k: .*' "$WORK/sluice.log" | grep -o 'out=[0-9]*' | cut -d= -f2)
      [ "$OUT" = "$COUNT" ] || { echo "sluice ($SOURCE, $MODE) delivered ${OUT:-?} of $COUNT"; tail -20 "$WORK/sluice.log"; exit 1; }
      read -r _ SU SS SRSS <"$WORK/sluice.time"
      WALL=$(python3 -c "print(f'{$T1 - $T0:.3f}')")
      COMMITS=$(grep -o ' commits=[0-9]*' "$WORK/sluice.log" | cut -d= -f2 || true)
      echo "$SOURCE $MODE $WALL $SU $SS $SRSS ${COMMITS:-0} ${CLIENT:-0}" >>"$RESULTS"
      echo "# $SOURCE run $RUN/$REPEAT $MODE: ${WALL}s ${COMMITS:+($COMMITS transactions)}" >&2
    done
  done
done

python3 - "$COUNT" "$SIZE" "$RESULTS" "$PER_FRAME" "$WINDOW" <<'EOF'
import statistics, sys
count, size, per_frame, window = int(sys.argv[1]), int(sys.argv[2]), sys.argv[4], sys.argv[5]
runs = {}
for line in open(sys.argv[3]):
    source, mode, wall, u, s, rss, commits, client = line.split()
    runs.setdefault(source, {}).setdefault(mode, []).append(
        (float(wall), float(u) + float(s), float(rss), int(commits), float(client)))
for source, modes in runs.items():
    how = ("FIFO -> pipe source" if source == "pipe" else
           f"forward-load ({per_frame} per request, window {window}, chunk acks) -> forward source")
    fw = source == "forward"
    print(f"{count} events of {size} B per run, {how} -> disk buffer -> kafka, "
          f"medians of {len(modes['idempotent'])} runs")
    print(f"{'mode':<13} {'wall_s':>8} {'events/s':>10} {'cpu_s/1M_ev':>12} {'rss_MB':>7} {'txns':>6}"
          + (f" {'client_acked/s':>15}" if fw else ""))
    for mode in ("idempotent", "exactly_once"):
        rs = modes[mode]
        wall, cpu, rss, commits, client = (statistics.median(r[i] for r in rs) for i in range(5))
        print(f"{mode:<13} {wall:8.2f} {count / wall:10.0f} {cpu / count * 1e6:12.2f} {rss / 1024:7.0f} "
              f"{commits:6.0f}" + (f" {client:15.0f}" if fw else ""))
    pairs = list(zip(modes["idempotent"], modes["exactly_once"]))
    rate = [i[0] / e[0] for i, e in pairs]
    cpu = [e[1] / i[1] for i, e in pairs]
    print(f"{source}: exactly_once / idempotent rate {statistics.median(rate):.2f} (goal >= 0.9) "
          f"[runs: {' '.join(f'{r:.2f}' for r in rate)}]; "
          f"CPU per event {statistics.median(cpu):.2f}x [runs: {' '.join(f'{r:.2f}' for r in cpu)}]")
EOF
