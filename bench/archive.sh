#!/usr/bin/env bash
# Kafka → archive benchmark: one local Apache Kafka broker (scripts/kafka-dev.sh)
# holding COUNT records of SIZE bytes over PARTS partitions (produced once by
# librdkafka's rdkafka_performance), drained in the same run by:
#   - rdkafka_performance -C -G (librdkafka's high-level consumer alone, payloads
#     dropped): the baseline;
#   - sluice, kafka source → archive sink (zstd level 3, local directory, files
#     of 64 MiB or 1 s), until every offset is committed (every file published;
#     the last one closes up to ~1.5 s after its last record: max_file_secs);
#   - sluice, kafka source → null sink, the same way;
#   - zstd -3 -T1 over the bytes the archive compressed (its files inflated): the
#     compression baseline, MB/s of input per core.
# Each consumer uses a fresh group and starts at the earliest offset; the three
# alternate REPEAT times and medians are printed, then the ratios (goals of issue
# 15: kafka → archive ≥ 0.9x the consumer alone; zstd level 3 ≥ 200 MB/s of input
# per core).
#
#   bench/archive.sh                     # 5,000,000 records of 200 B, 4 partitions
# (5M, not 1M: at 1M the run is ~1 s and the archive's last file closing
# max_file_secs after its last record is most of what is measured)
#   COUNT=200000 REPEAT=1 bench/archive.sh
#
# sluice is timed from its start to the moment the group's committed offsets reach
# the end offsets (polled every 50 ms by confluent-kafka), CPU is its user+sys
# (/usr/bin/time, the stop included). The baseline consumer is timed over its whole
# run (start, group join, COUNT records, close) as sluice is; its own summary line
# (timed from its first record) is printed too. Needs what bench/kafka.sh needs (Kafka,
# python3 with confluent-kafka, zstd, rdkafka_performance built and cached there);
# builds the sluice release binary when missing (SLUICE_BIN to use another).
set -euo pipefail

COUNT=${COUNT:-5000000}
SIZE=${SIZE:-200}
PARTS=${PARTS:-4}
REPEAT=${REPEAT:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SLUICE_BENCH_CACHE:-$HOME/.cache/sluice-bench}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=${SLUICE_BIN:-$TARGET/release/sluice}
export PATH="$HOME/.cargo/bin:$PATH"

for tool in /usr/bin/time zstd python3; do
  command -v "$tool" >/dev/null || { echo "bench/archive.sh: $tool missing (scripts/install-deps.sh)" >&2; exit 2; }
done
if [ ! -x "$SLUICE" ]; then
  echo "# building sluice (release)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p sluice --bin sluice)
fi
PERF=$(ls "$CACHE"/rdkafka-sys-*/examples/rdkafka_performance 2>/dev/null | sort -V | tail -1)
[ -x "$PERF" ] || { echo "bench/archive.sh: rdkafka_performance not built: run bench/kafka.sh once (it builds and caches it)" >&2; exit 2; }

WORK=$(mktemp -d)
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"
cleanup() {
  # sluice runs under /usr/bin/time: end both, by their ids.
  for f in "$WORK"/*.pid; do
    [ -e "$f" ] || continue
    pkill -TERM -P "$(cat "$f")" 2>/dev/null || true
    kill "$(cat "$f")" 2>/dev/null || true
  done
  stop_kafka
  rm -rf "$WORK"
}
trap cleanup EXIT
start_kafka
BROKER="127.0.0.1:$KAFKA_PORT"
TOPIC=bench-archive
kafka_topic "$TOPIC" "$PARTS"
"$PERF" -P -t "$TOPIC" -b "$BROKER" -s "$SIZE" -c "$COUNT" -S 0 -X linger.ms=50 -q >"$WORK/produce.log" 2>&1 \
  || { echo "producing failed:"; tail -20 "$WORK/produce.log"; exit 1; }

# Wait until GROUP has committed every end offset of TOPIC.
wait_committed() {
  python3 - "$BROKER" "$TOPIC" "$PARTS" "$1" <<'EOF'
import sys, time
from confluent_kafka import Consumer, TopicPartition
broker, topic, parts, group = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
c = Consumer({"bootstrap.servers": broker, "group.id": group, "enable.auto.commit": False})
tps = [TopicPartition(topic, p) for p in range(parts)]
ends = [c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps]
deadline = time.time() + 600
while time.time() < deadline:
    try:
        got = [tp.offset for tp in c.committed(tps, timeout=10)]
    except Exception:
        got = []
    if got == ends:
        sys.exit(0)
    time.sleep(0.05)
sys.exit(f"group {group}: committed {got}, ends {ends}")
EOF
}

run_sluice() { # name sink-toml -> "wall cpu"
  local name=$1 group="g-$1-$RUN"
  {
    echo "shutdown_timeout_secs = 60"
    echo "data_dir = \"$WORK/data-$name\""
    echo "[sources.in]"; echo 'type = "kafka"'; echo "brokers = \"$BROKER\""
    echo "topics = [\"$TOPIC\"]"; echo "group_id = \"$group\""; echo 'start_from = "earliest"'
    echo "$2"
  } >"$WORK/$name.toml"
  local t0 t1
  t0=$(date +%s.%N)
  SLUICE_LOG=info NO_COLOR=1 /usr/bin/time -f "%e %U %S %M" -o "$WORK/$name.time" \
    "$SLUICE" run --config "$WORK/$name.toml" 2>"$WORK/$name.log" &
  local spid=$!
  echo "$spid" >"$WORK/$name.pid"
  wait_committed "$group" || { kill "$spid"; tail -20 "$WORK/$name.log"; exit 1; }
  t1=$(date +%s.%N)
  kill -TERM "$(pgrep -P "$spid" -x sluice || echo "$spid")"
  wait "$spid" || { echo "sluice ($name) failed:"; tail -20 "$WORK/$name.log"; exit 1; }
  rm -f "$WORK/$name.pid"
  local u s
  read -r _ u s _ <"$WORK/$name.time"
  python3 -c "print(f'{$t1 - $t0:.3f} {$u + $s:.2f}')"
}

RESULTS="$WORK/results"
: >"$RESULTS"
for RUN in $(seq "$REPEAT"); do
  # --- baseline: librdkafka's consumer alone ---
  /usr/bin/time -f "%e %U %S %M" -o "$WORK/perf.time" \
    "$PERF" -C -G "g-perf-$RUN" -t "$TOPIC" -b "$BROKER" -c "$COUNT" -X auto.offset.reset=earliest -q \
    >"$WORK/perf.log" 2>&1 || { echo "rdkafka_performance -C failed:"; tail -20 "$WORK/perf.log"; exit 1; }
  read -r PWALL PU PS _ <"$WORK/perf.time"
  grep -h "consumed" "$WORK/perf.log" | tail -1 >"$WORK/perf.summary" || true
  echo "consumer $PWALL $(python3 -c "print($PU + $PS)")" >>"$RESULTS"

  # --- sluice: kafka → archive (zstd, local) ---
  rm -rf "$WORK/archive"
  echo "archive $(run_sluice archive "[sinks.cold]
type = \"archive\"
inputs = [\"in\"]
url = \"file://$WORK/archive\"
path = \"{field.kafka.topic}/{field.kafka.partition}-{first_offset}.jsonl.zst\"
compression = \"zstd\"
max_file_bytes = 67108864
max_file_secs = 1")" >>"$RESULTS"

  # --- sluice: kafka → null ---
  echo "null $(run_sluice null "[sinks.none]
type = \"null\"
inputs = [\"in\"]")" >>"$RESULTS"

  # --- zstd -3 on one core over the archive's bytes ---
  find "$WORK/archive" -path '*/_sluice' -prune -o -name '*.zst' -print0 | xargs -0 cat | zstd -dc >"$WORK/encoded"
  ZT0=$(date +%s.%N)
  zstd -3 -T1 -c "$WORK/encoded" >/dev/null
  ZT1=$(date +%s.%N)
  echo "zstd $(python3 -c "print(f'{$ZT1 - $ZT0:.3f}')") $(stat -c %s "$WORK/encoded")" >>"$RESULTS"
  echo "# run $RUN/$REPEAT: $(tr '\n' ';' <"$RESULTS" | tail -c 200)" >&2
done

python3 - "$COUNT" "$SIZE" "$PARTS" "$RESULTS" <<'EOF'
import statistics, sys
count, size, parts = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
runs = {}
for line in open(sys.argv[4]):
    name, a, b = line.split()
    runs.setdefault(name, []).append((float(a), float(b)))
med = lambda name, i: statistics.median(r[i] for r in runs[name])
print(f"{count} records of {size} B over {parts} partitions, medians of {len(runs['consumer'])} runs, Apache Kafka (KRaft, 1 node)")
print(f"{'reader':<22} {'wall_s':>8} {'records/s':>10} {'MB/s':>7} {'cpu_s':>7}")
for name, label in (("consumer", "rdkafka_performance -C"), ("archive", "sluice → archive zstd"), ("null", "sluice → null")):
    wall, cpu = med(name, 0), med(name, 1)
    print(f"{label:<22} {wall:8.2f} {count / wall:10.0f} {count * size / wall / 1e6:7.1f} {cpu:7.2f}")
zwall, zbytes = med("zstd", 0), med("zstd", 1)
aw = med("archive", 0)
print(f"zstd -3 -T1: {zbytes / 1e6:.0f} MB of encoded records in {zwall:.2f} s = {zbytes / zwall / 1e6:.0f} MB/s per core (goal >= 200);"
      f" sluice → archive: {zbytes / aw / 1e6:.0f} MB/s of encoded records")
ra = [a[0] / c[0] for a, c in zip(runs["archive"], runs["consumer"])]
rn = [n[0] / c[0] for n, c in zip(runs["null"], runs["consumer"])]
print(f"rate vs consumer alone: archive {1 / statistics.median(ra):.2f}x (goal >= 0.9), null {1 / statistics.median(rn):.2f}x"
      f"   [runs: archive {' '.join(f'{1 / r:.2f}' for r in ra)}; null {' '.join(f'{1 / r:.2f}' for r in rn)}]")
EOF
echo "rdkafka_performance's own summary of its last run (timed from its first record): $(cat "$WORK/perf.summary")"
