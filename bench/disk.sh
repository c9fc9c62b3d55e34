#!/usr/bin/env bash
# Disk buffer overhead end to end: the same input file → sluice (stdin source) →
# one sink, with a memory buffer and with a disk buffer (fsync = "interval"
# 100 ms, and fsync = "always"), alternating in the same run; the disk runs'
# ratios to the memory run (goal: disk-buffered events/s ≥ 0.7 of memory).
#
#   bench/disk.sh                                  # 2,000,000 lines of 100 B, null and file sinks
#   COUNT=500000 SINKS="null file kafka" REPEAT=3 bench/disk.sh
#   WAL=1 SINKS= bench/disk.sh                     # only the WAL stage (below)
#
# WAL=1 first runs the WAL on its own (`cargo bench -p sluice-wal --bench
# append_read`): append + read back + acknowledge against a plain sequential
# write of the same bytes with the same fsync cadence (interval 100 ms, and
# always), REPEAT alternating rounds, median MB/s and median per-round ratio
# (goal: >= 0.8).
#
# Measured: the whole `sluice run < input` until it exits after delivering every
# event (the stdin source ends at EOF; a disk buffer is drained before exit), so
# every event went through append → read → decode → sink. The kafka sink needs
# Apache Kafka (scripts/install-deps.sh): one local broker (scripts/kafka-dev.sh)
# for the run, a fresh topic per measurement.
# Prints wall seconds, events/s, MB/s, CPU seconds and peak RSS (medians).
set -euo pipefail

COUNT=${COUNT:-2000000}
SIZE=${SIZE:-100}
REPEAT=${REPEAT:-3}
SINKS=${SINKS-"null file"}
WAL=${WAL:-0}
BUFFERS=${BUFFERS:-"memory disk_interval disk_always"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=${SLUICE_BIN:-$TARGET/release/sluice}
export PATH="$HOME/.cargo/bin:$PATH"
[ -x /usr/bin/time ] || { echo "bench/disk.sh: /usr/bin/time missing (apt-get install time)" >&2; exit 2; }
if [ ! -x "$SLUICE" ]; then
  echo "# building sluice (release)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p sluice --bin sluice)
fi

if [ "$WAL" = 1 ]; then
  echo "# WAL stage: cargo bench -p sluice-wal --bench append_read (rounds: $REPEAT)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" WAL_BENCH_ROUNDS="$REPEAT" \
    cargo bench -q -p sluice-wal --bench append_read 2>/dev/null)
fi
[ -n "$SINKS" ] || exit 0

WORK=$(mktemp -d)
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"
cleanup() {
  stop_kafka
  rm -rf "$WORK"
}
trap cleanup EXIT
TOPICS=0

INPUT="$WORK/input.txt"
awk -v n="$COUNT" -v s="$SIZE" 'BEGIN { pad = sprintf("%*s", s, ""); gsub(/ /, "x", pad);
  for (i = 0; i < n; i++) { l = sprintf("%d %s", i, pad); print substr(l, 1, s - 1) } }' >"$INPUT"

start_broker() { # a fresh topic on the run's broker: $TOPIC
  [ -n "$KAFKA_PID" ] || start_kafka
  TOPICS=$((TOPICS + 1))
  TOPIC="bench-$TOPICS"
  kafka_topic "$TOPIC"
}

config() { # sink buffer
  echo "data_dir = \"$WORK/data\""
  echo "shutdown_timeout_secs = 600"
  echo '[sources.in]'; echo 'type = "stdin"'
  echo '[sinks.s]'; echo 'inputs = ["in"]'
  case "$1" in
    null) echo 'type = "null"' ;;
    file) echo 'type = "file"'; echo "path = \"$WORK/out.log\"" ;;
    kafka) echo 'type = "kafka"'; echo "brokers = \"127.0.0.1:$KAFKA_PORT\""; echo "topic = \"$TOPIC\""
           echo 'encoding = "raw"'; echo 'compression = "none"' ;;
  esac
  echo '[sinks.s.buffer]'
  case "$2" in
    memory) echo 'type = "memory"' ;;
    disk_interval) echo 'type = "disk"'; echo 'fsync = "interval"'; echo 'fsync_interval_ms = 100'
                   echo 'max_bytes = 4294967296' ;;
    disk_always) echo 'type = "disk"'; echo 'fsync = "always"'; echo 'max_bytes = 4294967296' ;;
  esac
}

RESULTS="$WORK/results"
: >"$RESULTS"
for SINK in $SINKS; do
  for RUN in $(seq "$REPEAT"); do
    for BUF in $BUFFERS; do
      rm -rf "$WORK/data" "$WORK/out.log"
      [ "$SINK" = kafka ] && start_broker
      config "$SINK" "$BUF" >"$WORK/sluice.toml"
      sync
      SLUICE_LOG=info NO_COLOR=1 /usr/bin/time -f "%e %U %S %M" -o "$WORK/time" \
        "$SLUICE" run --config "$WORK/sluice.toml" <"$INPUT" 2>"$WORK/sluice.log" \
        || { echo "sluice failed:"; tail -20 "$WORK/sluice.log"; exit 1; }
      OUT=$(grep -o 'Counters sinks.s: .*' "$WORK/sluice.log" | grep -o 'out=[0-9]*' | cut -d= -f2)
      [ "$OUT" = "$COUNT" ] || { echo "$SINK/$BUF delivered ${OUT:-?} of $COUNT"; tail -20 "$WORK/sluice.log"; exit 1; }
      read -r WALL U S RSS <"$WORK/time"
      echo "$SINK $BUF $RUN $WALL $U $S $RSS" >>"$RESULTS"
      echo "# $SINK $BUF run $RUN/$REPEAT: ${WALL}s" >&2
    done
  done
done

python3 - "$COUNT" "$SIZE" "$RESULTS" <<'EOF'
import statistics, sys
count, size = int(sys.argv[1]), int(sys.argv[2])
runs = {}
for line in open(sys.argv[3]):
    sink, buf, run, wall, u, s, rss = line.split()
    runs.setdefault((sink, buf), {})[int(run)] = (float(wall), float(u) + float(s), float(rss))
print(f"{count} events of {size} B per run, medians of {len(next(iter(runs.values())))} runs")
print(f"{'sink':<6} {'buffer':<14} {'wall_s':>7} {'events/s':>10} {'MB/s':>7} {'cpu_s':>6} {'rss_MB':>7} {'vs memory':>10}")
for sink in dict.fromkeys(k[0] for k in runs):
    mem = runs.get((sink, "memory"))
    for buf in ("memory", "disk_interval", "disk_always"):
        rs = runs.get((sink, buf))
        if not rs:
            continue
        wall, cpu, rss = (statistics.median(r[i] for r in rs.values()) for i in range(3))
        ratio = ""
        if mem and buf != "memory":
            # Same-run pairs: memory wall / disk wall = disk throughput relative to memory.
            rr = [mem[k][0] / rs[k][0] for k in rs if k in mem]
            ratio = f"{statistics.median(rr):.2f}x"
        print(f"{sink:<6} {buf:<14} {wall:7.2f} {count / wall:10.0f} {count * size / wall / 1e6:7.1f} "
              f"{cpu:6.2f} {rss / 1024:7.0f} {ratio:>10}")
print("goal: disk-buffered events/s >= 0.7x memory-buffered")
EOF
