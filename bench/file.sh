#!/usr/bin/env bash
# File source end to end: sluice tails a directory (type = "file") while `cp`
# (one file) or `tar` (100 files) writes the input into it, against `cat`
# copying the same bytes into a file in the same round (the baseline). Two
# shapes: one file of LINES 100-byte lines, and 100 files of LINES/100 lines
# each; three sinks: file, null, and kafka (a local Apache Kafka broker,
# scripts/kafka-dev.sh, a fresh topic per measurement). Rounds are interleaved
# (noisy machine) and the median per-round ratio is the figure.
# Then discovery latency: 1,000 files created one after another, each with one
# line, the time from its creation until its line is in the sink's output;
# p50/p99 (goal p99 < 1 s).
#   bench/file.sh [LINES] [ROUNDS]     (default 1,000,000 lines = 100 MB, 3 rounds)
#   FILE_BENCH_KAFKA=0 leaves out the kafka sink; DISCOVERY_FILES=N (1000).
# Timed: from the start of the copy into the watched directory until the sink
# holds every line — the file sink's output every byte (polled every 5 ms),
# null and kafka by the sink's delivered counter on /metrics (polled every
# 10 ms; a kafka sink counts a record once the broker acknowledged it) — so
# discovery, reading, framing, the pipeline and the sink are all inside.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
N=${1:-1000000}
ROUNDS=${2:-3}
KAFKA=${FILE_BENCH_KAFKA:-1}
DISC=${DISCOVERY_FILES:-1000}
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
BIN=${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}
[ -n "${SLUICE_BIN:-}" ] || cargo build --release -q -p sluice --bin sluice
W=$(mktemp -d)
WORK=$W
PID=
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null
  stop_kafka
  rm -rf "$W"
}
trap cleanup EXIT
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "%099d\n", i }' > "$W/input"
mkdir -p "$W/parts"
split -n l/100 -d -a 3 --additional-suffix=.log "$W/input" "$W/parts/p"
BYTES=$(stat -c %s "$W/input")
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }
SINKS="file null"
if [ "$KAFKA" = 1 ]; then
  start_kafka
  SINKS="$SINKS kafka"
fi

# Events the sink `out` delivered, from /metrics.
delivered() {
  curl -s "http://$API/metrics" | awk '/^sluice_component_sent_events_total\{/ && /component_id="out"/ { print $2; f = 1 } END { if (!f) print 0 }'
}

start_sluice() { # $1: sink kind; $2: include glob
  rm -rf "$W/data" "$W/out.log"
  local sink
  case "$1" in
    file) sink="type = \"file\"
path = \"$W/out.log\"" ;;
    null) sink='type = "null"' ;;
    kafka)
      # A fresh topic per measurement (this runs in a subshell: no counter).
      local topic="file-bench-$(date +%s%N)"
      kafka_topic "$topic" 1
      sink="type = \"kafka\"
brokers = \"127.0.0.1:$KAFKA_PORT\"
topic = \"$topic\"" ;;
  esac
  cat > "$W/file.toml" <<CFG
data_dir = "$W/data"
[api]
address = "127.0.0.1:0"
[sources.f]
type = "file"
include = ["$2"]
[sinks.out]
inputs = ["f"]
$sink
CFG
  "$BIN" run --config "$W/file.toml" 2> "$W/sluice.log" &
  PID=$!
  until grep -qs "Sluice started" "$W/sluice.log" && grep -qs "API listening" "$W/sluice.log"; do sleep 0.01; done
  API=$(sed -n 's/.*API listening.* address=\([0-9.:]*\).*/\1/p' "$W/sluice.log" | head -1)
}

stop_sluice() {
  kill -TERM "$PID"; wait "$PID" || true; PID=
}

run_sluice() { # $1: shape (one | many); $2: sink kind
  rm -rf "$W/logs"; mkdir -p "$W/logs"
  start_sluice "$2" "$W/logs/*.log"
  t0=$(now)
  if [ "$1" = one ]; then
    cp "$W/input" "$W/logs/app.log"
  else
    # One process writes all 100 files (no process start per file in the timing).
    tar -C "$W/parts" -cf - . | tar -C "$W/logs" -xf -
  fi
  if [ "$2" = file ]; then
    while [ "$(stat -c %s "$W/out.log" 2>/dev/null || echo 0)" -lt "$BYTES" ]; do sleep 0.005; done
  else
    local deadline=$((SECONDS + 600))
    while [ "$(delivered)" -lt "$N" ]; do
      [ "$SECONDS" -lt "$deadline" ] || { echo "bench/file.sh: $2 sink incomplete after 600 s; $W/sluice.log:" >&2; tail -5 "$W/sluice.log" >&2; exit 1; }
      sleep 0.01
    done
  fi
  since "$t0"
  stop_sluice
}

if [ "$KAFKA" = 1 ]; then
  # Untimed warm-up: a fresh broker makes the first idempotent producer wait
  # ("Coordinator load in progress") for as long as it loads its coordinator.
  mkdir -p "$W/warm"; head -1000 "$W/input" > "$W/warm/w.log"
  start_sluice kafka "$W/warm/*.log"
  deadline=$((SECONDS + 600))
  while [ "$(delivered)" -lt 1000 ] && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
  stop_sluice
fi

printf "%-6s %-22s %-8s %-34s %-34s\n" round "cat > file" sink "1 file" "100 files"
: > "$W/ratios"
for r in $(seq "$ROUNDS"); do
  rm -f "$W/cat.out"; sync
  t0=$(now); cat "$W/input" > "$W/cat.out"; CAT=$(since "$t0")
  for s in $SINKS; do
    ONE=$(run_sluice one "$s")
    MANY=$(run_sluice many "$s")
    awk -v r="$r" -v s="$s" -v c="$CAT" -v o="$ONE" -v m="$MANY" -v n="$N" -v b="$BYTES" 'BEGIN {
      printf "%-6s %6.3f s %5.0f MB/s        %-8s %6.3f s %4.2f M lines/s %5.2fx cat  %6.3f s %4.2f M lines/s %5.2fx cat\n",
        r, c, b / c / 1e6, s, o, n / o / 1e6, o / c, m, n / m / 1e6, m / c
      printf "%s %s %s\n", s, o / c, m / c > "/dev/stderr" }' 2>> "$W/ratios"
  done
done
for s in $SINKS; do
  grep "^$s " "$W/ratios" | sort -n -k2 | awk -v s="$s" '{ v[NR] = $2 } END { printf "median 1 file -> %s: %.2fx cat\n", s, v[int((NR + 1) / 2)] }'
  grep "^$s " "$W/ratios" | sort -n -k3 | awk -v s="$s" '{ v[NR] = $3 } END { printf "median 100 files -> %s: %.2fx cat\n", s, v[int((NR + 1) / 2)] }'
done

# Discovery latency: files created one by one in directories made after start
# (as pods appear), the sink's output watched for each file's line.
rm -rf "$W/pods"; mkdir -p "$W/pods"
start_sluice file "$W/pods/**/*.log"
python3 - "$W/pods" "$W/out.log" "$DISC" <<'PY'
import os, sys, time
pods, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
while not os.path.exists(out):
    # The sink creates its file on the first event: prime it with one.
    os.makedirs(f"{pods}/warm", exist_ok=True)
    with open(f"{pods}/warm/0.log", "a") as f:
        f.write("warm\n")
    time.sleep(0.05)
lat = []
with open(out) as o:
    o.seek(0, 2)
    buf = ""
    for i in range(n):
        d = f"{pods}/ns_pod-{i}_uid/c"
        t0 = time.monotonic()
        os.makedirs(d)
        with open(f"{d}/0.log", "w") as f:
            f.write(f"line-{i}\n")
        want = f"line-{i}\n"
        while want not in buf:
            chunk = o.read()
            if chunk:
                buf += chunk
            else:
                if time.monotonic() - t0 > 30:
                    sys.exit(f"file {i} not delivered within 30 s")
                time.sleep(0.0005)
        lat.append(time.monotonic() - t0)
        buf = buf[buf.index(want) + len(want):]
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000
print(f"discovery latency over {n} new files (new directory + file -> file sink): "
      f"p50 {p(0.50):.1f} ms, p99 {p(0.99):.1f} ms, max {lat[-1] * 1000:.1f} ms")
PY
stop_sluice
