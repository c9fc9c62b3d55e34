#!/usr/bin/env bash
# End-to-end Kafka sink benchmark: a FIFO → sluice (pipe source, kafka sink) →
# a local Apache Kafka broker (scripts/kafka-dev.sh, one for the whole run, a
# fresh topic per measurement), against librdkafka's own `rdkafka_performance`
# producing the same count and size with the same settings to the same broker.
# Profiles: `cdn` — the CDN producer tuning of mission §3 (gzip, linger 1 s);
# `lz4` — lz4, linger 50 ms (compression no longer hides our own cost). Both
# acks=all with the idempotent producer.
#
#   bench/kafka.sh                      # 1,000,000 events of 100 B and of 1 KiB
#   COUNT=200000 SIZES="100" PROFILES="lz4" REPEAT=1 bench/kafka.sh
#
# Prints, per size, events/s, MB/s, CPU seconds per million events and peak RSS
# for both, and sluice's ratios (goal: wall ≤ 1.2x, CPU ≤ 1.5x). The two
# producers alternate REPEAT times (default 3) and medians are reported, which
# keeps the ratios meaningful on a busy machine.
#
# Measured: sluice from the first byte written into the FIFO until the process
# has exited after delivering everything (SIGTERM once it has read all input; the
# stop flushes the producer); CPU is the sluice process's user+sys. The baseline
# is rdkafka_performance's whole run with `-S 0` (a sequence number in each
# payload, so records differ as log lines do; it then copies each payload, as
# sluice's producer does). sluice's input lines are byte-identical to those
# payloads ("N: \0" + its text pattern), so both compress the same bytes.
# Needs: Java + Apache Kafka (scripts/install-deps.sh), python3 with
# confluent-kafka, a C toolchain; builds what is missing:
#   - sluice release binary (cargo build --release -p sluice),
#   - rdkafka_performance from the rdkafka-sys crate's bundled librdkafka,
#     cached in ${SLUICE_BENCH_CACHE:-~/.cache/sluice-bench} (outside the repo).
set -euo pipefail

COUNT=${COUNT:-1000000}
REPEAT=${REPEAT:-3}
SIZES=${SIZES:-"100 1024"}
PROFILES=${PROFILES:-"cdn lz4"}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${SLUICE_BENCH_CACHE:-$HOME/.cache/sluice-bench}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
SLUICE=${SLUICE_BIN:-$TARGET/release/sluice}
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$CACHE"

[ -x /usr/bin/time ] || { echo "bench/kafka.sh: /usr/bin/time missing (apt-get install time)" >&2; exit 2; }

if [ ! -x "$SLUICE" ]; then
  echo "# building sluice (release)"
  (cd "$ROOT" && CARGO_TARGET_DIR="$TARGET" cargo build --release -q -p sluice --bin sluice)
fi

# rdkafka_performance from the same librdkafka version sluice links.
RDSYS=$(ls -d "$HOME"/.cargo/registry/src/*/rdkafka-sys-*/librdkafka 2>/dev/null | sort -V | tail -1)
[ -n "$RDSYS" ] || { echo "bench/kafka.sh: rdkafka-sys source not found; build sluice first" >&2; exit 2; }
RDVER=$(basename "$(dirname "$RDSYS")")
PERF="$CACHE/$RDVER/examples/rdkafka_performance"
if [ ! -x "$PERF" ]; then
  echo "# building rdkafka_performance from $RDVER (once, cached in $CACHE)"
  rm -rf "$CACHE/$RDVER" && cp -r "$RDSYS" "$CACHE/$RDVER"
  (cd "$CACHE/$RDVER" && ./configure --disable-ssl --disable-sasl --disable-gssapi --disable-curl >build.log 2>&1 \
    && make -j"$(nproc)" -C src >>build.log 2>&1 && make -C examples rdkafka_performance >>build.log 2>&1) \
    || { echo "bench/kafka.sh: building rdkafka_performance failed, see $CACHE/$RDVER/build.log" >&2; exit 1; }
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

# Producer settings per profile, identical for both producers.
profile() {
  case "$1" in
    cdn) TUNE=(
      "compression.codec=gzip" "retry.backoff.ms=3000" "queue.buffering.max.messages=250000"
      "linger.ms=1000" "batch.num.messages=10000" "topic.metadata.refresh.interval.ms=150000"
      "socket.timeout.ms=45000" "socket.keepalive.enable=true" "acks=all" "enable.idempotence=true") ;;
    lz4) TUNE=(
      "compression.codec=lz4" "queue.buffering.max.messages=250000" "linger.ms=50"
      "batch.num.messages=10000" "acks=all" "enable.idempotence=true") ;;
    *) echo "bench/kafka.sh: unknown profile $1 (cdn, lz4)" >&2; exit 2 ;;
  esac
}

gen_input() { # size -> path
  local f="$CACHE/input-rdkperf-$COUNT-$1.txt"
  if [ ! -s "$f" ]; then
    python3 - "$COUNT" "$1" "$f" <<'EOF'
import sys
count, size, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
# rdkafka_performance -S: a buffer of `size` bytes filled with its pattern, then
# snprintf("%llu: ") over its start (the NUL included) for each message.
pattern = b"librdkafka_performance testing!"
filler = (pattern * (size // len(pattern) + 2))[:size]
with open(path, "wb", buffering=1 << 20) as out:
    for i in range(count):
        head = b"%d: \0" % i
        out.write(head + filler[len(head):] + b"\n")
EOF
  fi
  echo "$f"
}

RESULTS="$WORK/results"
: >"$RESULTS"
for PROFILE in $PROFILES; do
profile "$PROFILE"
CODEC=""
for kv in "${TUNE[@]}"; do [ "${kv%%=*}" = compression.codec ] && CODEC="${kv#*=}"; done
for SIZE in $SIZES; do
  INPUT=$(gen_input "$SIZE")
  for RUN in $(seq "$REPEAT"); do
    # --- sluice: FIFO → kafka ---
    TOPIC="bench-$PROFILE-$SIZE-$RUN-sluice"
    kafka_topic "$TOPIC"
    FIFO="$WORK/in.pipe"; rm -f "$FIFO"; mkfifo "$FIFO"
    {
      echo "shutdown_timeout_secs = 120"
      echo "[sources.in]"; echo 'type = "pipe"'; echo "path = \"$FIFO\""
      echo "[sinks.k]"; echo 'type = "kafka"'; echo 'inputs = ["in"]'
      echo "brokers = \"127.0.0.1:$KAFKA_PORT\""; echo "topic = \"$TOPIC\""; echo 'encoding = "raw"'
      echo "compression = \"$CODEC\""; echo 'acks = "all"'
      echo "[sinks.k.librdkafka]"
      for kv in "${TUNE[@]}"; do
        case "${kv%%=*}" in compression.codec|acks|enable.idempotence) continue ;; esac
        echo "\"${kv%%=*}\" = \"${kv#*=}\""
      done
    } >"$WORK/sluice.toml"
    SLUICE_LOG=info NO_COLOR=1 /usr/bin/time -f "%e %U %S %M" -o "$WORK/sluice.time" \
      "$SLUICE" run --config "$WORK/sluice.toml" 2>"$WORK/sluice.log" &
    SPID=$!
    for _ in $(seq 200); do grep -q "Reading FIFO" "$WORK/sluice.log" 2>/dev/null && break; sleep 0.05; done
    T0=$(date +%s.%N)
    cat "$INPUT" >"$FIFO"
    # Everything written is in the pipe; wait until sluice has read it all, then stop it.
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
    [ "$OUT" = "$COUNT" ] || { echo "sluice delivered ${OUT:-?} of $COUNT"; tail -20 "$WORK/sluice.log"; exit 1; }
    read -r _ SU SS SRSS <"$WORK/sluice.time"
    SWALL=$(python3 -c "print(f'{$T1 - $T0:.3f}')")

    # --- baseline: rdkafka_performance ---
    TOPIC="bench-$PROFILE-$SIZE-$RUN-perf"
    kafka_topic "$TOPIC"
    XS=(); for kv in "${TUNE[@]}"; do XS+=(-X "$kv"); done
    /usr/bin/time -f "%e %U %S %M" -o "$WORK/perf.time" \
      "$PERF" -P -t "$TOPIC" -b "127.0.0.1:$KAFKA_PORT" -s "$SIZE" -c "$COUNT" -S 0 "${XS[@]}" -q >"$WORK/perf.log" 2>&1 \
      || true
    # Its exit status compares its count of produced messages with the delivered
    # ones, and a produce call retried after backpressure (QUEUE_FULL) can leave the
    # first one short ("999999 messages produced ... 1000000 delivered"): judge by
    # the delivery line.
    grep -q " $COUNT delivered (offset [0-9]*, 0 failed)" "$WORK/perf.log" \
      || { echo "rdkafka_performance failed:"; tail -20 "$WORK/perf.log"; exit 1; }
    read -r PWALL PU PS PRSS <"$WORK/perf.time"
    echo "$PROFILE $SIZE sluice $SWALL $SU $SS $SRSS" >>"$RESULTS"
    echo "$PROFILE $SIZE rdkperf $PWALL $PU $PS $PRSS" >>"$RESULTS"
    echo "# $PROFILE size $SIZE run $RUN/$REPEAT: sluice ${SWALL}s, rdkafka_performance ${PWALL}s" >&2
  done
done
done

python3 - "$COUNT" "$RESULTS" <<'EOF'
import statistics, sys
count = int(sys.argv[1])
runs = {}
for line in open(sys.argv[2]):
    prof, size, name, wall, u, s, rss = line.split()
    runs.setdefault((prof, int(size), name), []).append((float(wall), float(u) + float(s), float(rss)))
print(f"{count} events per run, medians of {len(next(iter(runs.values())))} runs, Apache Kafka (KRaft, 1 node)")
print(f"{'profile':<8} {'size':<6} {'producer':<8} {'wall_s':>8} {'events/s':>10} {'MB/s':>7} {'cpu_s/1M_ev':>12} {'rss_MB':>7}")
for prof, size in sorted({k[:2] for k in runs}):
    for name in ("sluice", "rdkperf"):
        rs = runs[(prof, size, name)]
        wall, cpu, rss = (statistics.median(r[i] for r in rs) for i in range(3))
        print(f"{prof:<8} {size:<6} {name:<8} {wall:8.2f} {count / wall:10.0f} {count * size / wall / 1e6:7.1f} "
              f"{cpu / count * 1e6:12.2f} {rss / 1024:7.0f}")
    pairs = list(zip(runs[(prof, size, "sluice")], runs[(prof, size, "rdkperf")]))
    rw = [s[0] / p[0] for s, p in pairs]
    rc = [s[1] / p[1] for s, p in pairs]
    rr = [s[2] / p[2] for s, p in pairs]
    print(f"{prof:<8} {size:<6} ratio    wall {statistics.median(rw):.2f}x   "
          f"cpu {statistics.median(rc):.2f}x (goal <= 1.2x)   rss {statistics.median(rr):.2f}x (goal <= 2x)   "
          f"[runs: wall {' '.join(f'{r:.2f}' for r in rw)}; cpu {' '.join(f'{r:.2f}' for r in rc)}]")
EOF
