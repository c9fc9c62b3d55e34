#!/usr/bin/env bash
# Cost of exactly-once: a FIFO → sluice (pipe source, disk buffer) → a local
# Apache Kafka broker (scripts/kafka-dev.sh, one for the whole run, a fresh
# topic per measurement), the Kafka sink with `exactly_once = true`
# (transactions at the default size and interval) against the same sink
# without it (the idempotent producer, acks=all), alternating REPEAT times in
# the same run. Goal: exactly-once ≥ 0.9 of the idempotent rate.
#
#   bench/kafka-txn.sh                          # 1,000,000 events of 100 B, 3 runs each
#   COUNT=200000 REPEAT=1 bench/kafka-txn.sh
#   EXTRA='transaction_interval_ms = 500' bench/kafka-txn.sh   # another transaction size
#
# Measured: from the first byte written into the FIFO until sluice has exited
# after delivering everything (SIGTERM once it has read all input; the disk
# buffer then drains into Kafka, and with exactly_once the last transaction
# commits). Both use linger.ms = 5 (librdkafka's default) and lz4. Prints
# events/s and CPU seconds per million events per mode, medians, and the ratio.
# Needs: Java + Apache Kafka (scripts/install-deps.sh), python3 with
# confluent-kafka; builds the sluice release binary when missing.
set -euo pipefail

COUNT=${COUNT:-1000000}
REPEAT=${REPEAT:-3}
SIZE=${SIZE:-100}
EXTRA=${EXTRA:-}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=${SLUICE_BIN:-$TARGET/release/sluice}
export PATH="$HOME/.cargo/bin:$PATH"

[ -x /usr/bin/time ] || { echo "bench/kafka-txn.sh: /usr/bin/time missing (apt-get install time)" >&2; exit 2; }
if [ ! -x "$SLUICE" ]; then
  echo "# building sluice (release)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p sluice --bin sluice)
fi

WORK=$(mktemp -d)
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"
cleanup() {
  stop_kafka
  [ -n "${KEEP_LOGS:-}" ] && cp "$WORK"/sluice.log "$KEEP_LOGS" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
start_kafka

INPUT="$WORK/input.txt"
python3 - "$COUNT" "$SIZE" "$INPUT" <<'EOF'
import sys
count, size, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(path, "wb", buffering=1 << 20) as out:
    for i in range(count):
        head = b"%012d " % i
        out.write(head + b"x" * max(0, size - len(head)) + b"\n")
EOF

RESULTS="$WORK/results"
: >"$RESULTS"
for RUN in $(seq "$REPEAT"); do
  for MODE in idempotent exactly_once; do
    TOPIC="bench-txn-$RUN-$MODE"
    kafka_topic "$TOPIC"
    FIFO="$WORK/in.pipe"; rm -f "$FIFO"; mkfifo "$FIFO"
    rm -rf "$WORK/data"
    {
      echo "data_dir = \"$WORK/data\""
      echo "shutdown_timeout_secs = 300"
      echo "[sources.in]"; echo 'type = "pipe"'; echo "path = \"$FIFO\""
      echo "[sinks.k]"; echo 'type = "kafka"'; echo 'inputs = ["in"]'
      echo "brokers = \"127.0.0.1:$KAFKA_PORT\""; echo "topic = \"$TOPIC\""; echo 'encoding = "raw"'
      echo 'compression = "lz4"'; echo 'acks = "all"'
      echo "checkpoint_topic = \"bench-txn-checkpoints\""
      if [ "$MODE" = exactly_once ]; then echo "exactly_once = true"; echo "$EXTRA"; fi
      echo "[sinks.k.buffer]"; echo 'type = "disk"'
    } >"$WORK/sluice.toml"
    SLUICE_LOG=${SLUICE_LOG:-info} NO_COLOR=1 /usr/bin/time -f "%e %U %S %M" -o "$WORK/sluice.time" \
      "$SLUICE" run --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
    SPID=$!
    for _ in $(seq 400); do grep -q "Reading FIFO" "$WORK/sluice.log" 2>/dev/null && break; sleep 0.05; done
    if [ "$MODE" = exactly_once ]; then
      for _ in $(seq 600); do grep -q "transactions ready" "$WORK/sluice.log" 2>/dev/null && break; sleep 0.05; done
    fi
    T0=$(date +%s.%N)
    cat "$INPUT" >"$FIFO"
    python3 - "$FIFO" <<'EOF'
import fcntl, os, struct, sys, termios, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)
while struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0" * 4))[0] > 0:
    time.sleep(0.005)
EOF
    SLUICE_PID=$(pgrep -P "$SPID" -x sluice || true)
    kill -TERM "${SLUICE_PID:-$SPID}"
    wait "$SPID" || { echo "sluice failed:"; tail -20 "$WORK/sluice.log"; exit 1; }
    T1=$(date +%s.%N)
    OUT=$(grep -o 'Counters sinks.k: .*' "$WORK/sluice.log" | grep -o 'out=[0-9]*' | cut -d= -f2)
    [ "$OUT" = "$COUNT" ] || { echo "sluice ($MODE) delivered ${OUT:-?} of $COUNT"; tail -20 "$WORK/sluice.log"; exit 1; }
    read -r _ SU SS SRSS <"$WORK/sluice.time"
    WALL=$(python3 -c "print(f'{$T1 - $T0:.3f}')")
    COMMITS=$(grep -o 'commits=[0-9]*' "$WORK/sluice.log" | cut -d= -f2 || true)
    echo "$MODE $WALL $SU $SS $SRSS ${COMMITS:-0}" >>"$RESULTS"
    echo "# run $RUN/$REPEAT $MODE: ${WALL}s ${COMMITS:+($COMMITS transactions)}" >&2
  done
done

python3 - "$COUNT" "$SIZE" "$RESULTS" <<'EOF'
import statistics, sys
count, size = int(sys.argv[1]), int(sys.argv[2])
runs = {}
for line in open(sys.argv[3]):
    mode, wall, u, s, rss, commits = line.split()
    runs.setdefault(mode, []).append((float(wall), float(u) + float(s), float(rss), int(commits)))
print(f"{count} events of {size} B per run, pipe -> disk buffer -> kafka, medians of {len(runs['idempotent'])} runs")
print(f"{'mode':<13} {'wall_s':>8} {'events/s':>10} {'cpu_s/1M_ev':>12} {'rss_MB':>7} {'txns':>6}")
for mode in ("idempotent", "exactly_once"):
    rs = runs[mode]
    wall, cpu, rss, commits = (statistics.median(r[i] for r in rs) for i in range(4))
    print(f"{mode:<13} {wall:8.2f} {count / wall:10.0f} {cpu / count * 1e6:12.2f} {rss / 1024:7.0f} {commits:6.0f}")
ratios = [i[0] / e[0] for i, e in zip(runs["idempotent"], runs["exactly_once"])]
print(f"exactly_once / idempotent rate: {statistics.median(ratios):.2f} (goal >= 0.9) "
      f"[runs: {' '.join(f'{r:.2f}' for r in ratios)}]")
EOF
