#!/usr/bin/env bash
# The cost of the metrics endpoint on the hottest paths: pipe → file and forward →
# null (bench/forward-load, 1,000 events per request, 16 in flight, acked after
# delivery) with `[api]` off and on (scraped every 100 ms during the run, 150×
# Prometheus' default rate), and pipe → tenant route → file (per-tenant
# accounting, 1,000 tenants) off and on. Runs alternate within each round on this noisy machine;
# the figure is the median of the per-round ratios (on / off).
#   [SLUICE_BIN=…] bench/api.sh [LINES] [ROUNDS]     (default 1,000,000 lines = 100 MB, 5 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
ROUNDS=${2:-5}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
BIN=${SLUICE_BIN:-$CARGO_TARGET_DIR/release/sluice}
[ -n "${SLUICE_BIN:-}" ] || cargo build --release -q -p sluice
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
for a in 0 1; do
  {
    echo "data_dir = \"$W/data\""
    [ "$a" = 1 ] && printf '[api]\naddress = "127.0.0.1:%s"\n' "$PORT"
    printf '[sources.fw]\ntype = "forward"\naddress = "127.0.0.1:0"\n'
    printf '[sinks.n]\ntype = "null"\ninputs = ["fw"]\n'
  } > "$W/fwd$a.toml"
done
LOAD_TARGET="$CARGO_TARGET_DIR/forward-load"
(cd bench/forward-load && CARGO_TARGET_DIR="$LOAD_TARGET" cargo build --release -q)
LOAD="$LOAD_TARGET/release/forward-load"

run() { # NAME INPUT → prints "wall_seconds cpu_seconds" (sluice's user + sys)
  rm -f "$W/out" "$W/in.fifo"
  /usr/bin/time -f "%U %S" -o "$W/$1.cpu" "$BIN" run --config "$W/$1.toml" 2> "$W/$1.log" &
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
  kill -TERM "$(pgrep -P $PID)"; wait $PID; PID=
  local wall
  wall=$(since "$t0")
  if [ -n "$SCRAPER" ]; then kill $SCRAPER; wait $SCRAPER 2>/dev/null || true; SCRAPER=; fi
  echo "$wall $(awk '{ printf "%.3f", $1 + $2 }' "$W/$1.cpu")"
}

fwd() { # API(0|1) → prints "wall_seconds cpu_seconds" for N events forward → null
  /usr/bin/time -f "%U %S" -o "$W/fwd.cpu" "$BIN" run --config "$W/fwd$1.toml" 2> "$W/fwd.log" &
  PID=$!
  local addr=
  while [ -z "$addr" ]; do
    sleep 0.02
    addr=$(sed -n 's/.*Forward source listening\. address=\([0-9.:]*\).*/\1/p' "$W/fwd.log")
  done
  if [ "$1" = 1 ]; then
    (while sleep 0.1; do curl -s -o /dev/null "http://127.0.0.1:$PORT/metrics" || true; done) &
    SCRAPER=$!
  fi
  local line rate
  line=$("$LOAD" send "$addr" "$N" --per-frame 1000 --window 16)
  rate=$(sed -n 's/.*events_per_sec=\([0-9.]*\).*/\1/p' <<<"$line")
  kill -TERM "$(pgrep -P $PID)"; wait $PID; PID=
  if [ -n "$SCRAPER" ]; then kill $SCRAPER; wait $SCRAPER 2>/dev/null || true; SCRAPER=; fi
  echo "$(echo "$N / $rate" | bc -l) $(awk '{ printf "%.3f", $1 + $2 }' "$W/fwd.cpu")"
}

printf "%-6s %-18s %-18s %-14s %-18s %-18s %-14s\n" round "file off" "file on" "on/off" \
  "tenant off" "tenant on" "on/off"
echo "       (wall s, sluice CPU s)                ratios: wall, CPU"
: > "$W/ratios"
for r in $(seq "$ROUNDS"); do
  A=$(run off plain); B=$(run on plain); C=$(run toff tenant); D=$(run ton tenant)
  E=$(fwd 0); F=$(fwd 1)
  echo "$r $A $B $C $D $E $F" | awk '{
    printf "%-6s %6.3f %6.3f      %6.3f %6.3f      %5.2f %5.2f    %6.3f %6.3f      %6.3f %6.3f      %5.2f %5.2f\n",
      $1, $2, $3, $4, $5, $4 / $2, $5 / $3, $6, $7, $8, $9, $8 / $6, $9 / $7
    printf "       forward -> null: off %6.3f %6.3f, on %6.3f %6.3f, on/off %5.2f %5.2f\n", $10, $11, $12, $13, $12 / $10, $13 / $11
    printf "%s %s %s %s %s %s\n", $4 / $2, $5 / $3, $8 / $6, $9 / $7, $12 / $10, $13 / $11 > "/dev/stderr" }' 2>> "$W/ratios"
done
med() { sort -n -k"$1" "$W/ratios" | awk -v k="$1" '{ v[NR] = $k } END { printf "%.3f", v[int((NR + 1) / 2)] }'; }
echo "median on/off, pipe -> file: wall $(med 1), CPU $(med 2)"
echo "median on/off, pipe -> tenant route (1,000 tenants) -> file: wall $(med 3), CPU $(med 4)"
echo "median on/off, forward -> null (1,000 events per request, 16 in flight): wall $(med 5), CPU $(med 6)"
echo "($N lines of 100 B per run; while on, /metrics is scraped every 100 ms)"
