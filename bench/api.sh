#!/usr/bin/env bash
# The cost of the metrics endpoint on the hottest line path: pipe → file with
# `[api]` off and on (scraped every 100 ms during the run, 150× Prometheus'
# default rate), and pipe → tenant route → file (per-tenant accounting, 1,000
# tenants) off and on. Runs alternate within each round on this noisy machine;
# the figure is the median of the per-round ratios (on / off).
#   bench/api.sh [LINES] [ROUNDS]     (default 1,000,000 lines = 100 MB, 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
ROUNDS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
cargo build --release -q -p sluice
BIN="$CARGO_TARGET_DIR/release/sluice"
W=$(mktemp -d)
PID=
SCRAPER=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; [ -n "$SCRAPER" ] && kill $SCRAPER 2>/dev/null; rm -rf "$W"' EXIT
# Plain lines, and the same lines each led by one of 1,000 tenant ids.
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "%099d\n", i }' > "$W/plain"
awk -v n="$N" 'BEGIN { for (i = 0; i < n; i++) printf "t%03d %094d\n", i % 1000, i }' > "$W/tenant"
awk 'BEGIN { for (i = 0; i < 1000; i++) printf "t%03d\n", i }' > "$W/tenants.txt"
BYTES=$(stat -c %s "$W/plain")
PORT=$((20000 + RANDOM % 20000))
now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc -l; }

config() { # NAME API(0|1) TENANT(0|1)
  {
    echo "data_dir = \"$W/data\""
    [ "$2" = 1 ] && printf '[api]\naddress = "127.0.0.1:%s"\n' "$PORT"
    printf '[sources.p]\ntype = "pipe"\npath = "%s/in.fifo"\n' "$W"
    local input=p
    if [ "$3" = 1 ]; then
      printf '[routes.t]\ntype = "tenant"\ninputs = ["p"]\nactive_list = "%s/tenants.txt"\n' "$W"
      input=t
    fi
    printf '[sinks.f]\ntype = "file"\ninputs = ["%s"]\npath = "%s/out"\n' "$input" "$W"
  } > "$W/$1.toml"
}
config off 0 0; config on 1 0; config toff 0 1; config ton 1 1

run() { # NAME INPUT → prints seconds
  rm -f "$W/out" "$W/in.fifo"
  "$BIN" run --config "$W/$1.toml" 2> "$W/$1.log" &
  PID=$!
  while [ ! -p "$W/in.fifo" ]; do sleep 0.01; done
  case $1 in on | ton)
    (while sleep 0.1; do curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics" || true; done) &
    SCRAPER=$! ;;
  esac
  local t0 size
  t0=$(now); cat "$W/$2" > "$W/in.fifo"
  size=$(stat -c %s "$W/$2")
  # The tenant route strips nothing here: the file gets every byte.
  while [ "$(stat -c %s "$W/out" 2>/dev/null || echo 0)" -lt "$size" ]; do sleep 0.005; done
  kill -TERM $PID; wait $PID; PID=
  since "$t0"
  if [ -n "$SCRAPER" ]; then kill $SCRAPER; wait $SCRAPER 2>/dev/null || true; SCRAPER=; fi
}

printf "%-6s %-12s %-12s %-8s %-12s %-12s %-8s\n" round "file off" "file on" ratio "tenant off" "tenant on" ratio
: > "$W/ratios"
for r in $(seq "$ROUNDS"); do
  A=$(run off plain); B=$(run on plain); C=$(run toff tenant); D=$(run ton tenant)
  awk -v r="$r" -v a="$A" -v b="$B" -v c="$C" -v d="$D" -v n="$N" 'BEGIN {
    printf "%-6s %5.3f s      %5.3f s      %5.3f    %5.3f s      %5.3f s      %5.3f\n", r, a, b, b / a, c, d, d / c
    printf "%s %s\n", b / a, d / c > "/dev/stderr" }' 2>> "$W/ratios"
done
sort -n -k1 "$W/ratios" | awk '{ p[NR] = $1 } END { printf "median pipe -> file, api on / off: %.3f\n", p[int((NR + 1) / 2)] }'
sort -n -k2 "$W/ratios" | awk '{ p[NR] = $2 } END { printf "median pipe -> tenant -> file, api on / off: %.3f\n", p[int((NR + 1) / 2)] }'
echo "($N lines of 100 B, $BYTES bytes per run; scrape every 100 ms while on)"
