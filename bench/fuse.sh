#!/usr/bin/env bash
# Write cost of sluice's `fuse` source, in one run, against the raw directory and against
# bindfs --multithreaded (Debian's C FUSE passthrough: what plain FUSE costs here).
#   bench/fuse.sh [--rounds R] [--small N] [--block-mib M] [--meta F] [--dir BASE]
# Workloads per target (median of R rounds, targets interleaved within a round):
#   100 B appends, one write(2) each: `dd bs=100 oflag=append` (writes/s) and a C loop
#   timing every write (writes/s, p50/p99 latency); 4 KiB and 1 MiB sequential writes
#   with dd (MB/s); metadata: F × (create + 100 B write + close, rename, unlink) (files/s);
#   CPU of the FUSE daemon (bindfs, or the whole sluice process: FUSE threads, drain,
#   null sink) per MB of 1 MiB writes and per 100 B write.
# sluice runs the real daemon: fuse source → null sink. At the end it is stopped and its
# "Capture stopped." line must show every byte captured (no queue drops).
# Needs /dev/fuse and root (or fusermount3); installs bindfs with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=3 SMALL=100000 MIB=512 K4_MIB=256 META=5000 BASE=/var/tmp/sluice-fuse-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --small) SMALL=$2; shift 2 ;;
    --block-mib) MIB=$2; K4_MIB=$(( $2 / 2 )); shift 2 ;;
    --meta) META=$2; shift 2 ;;
    --dir) BASE=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
export LC_ALL=C
if ! command -v bindfs >/dev/null 2>&1; then
  echo "fuse.sh: apt-get install bindfs"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bindfs >/dev/null
  }
fi
if [ -z "${SLUICE_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
  cargo build --release -q -p sluice --bin sluice
  SLUICE_BIN="$CARGO_TARGET_DIR/release/sluice"
fi
W=$(mktemp -d)
cc -O2 -o "$W/wbench" bench/fuse_wbench.c

BPID= SPID=
mounted() { grep -q " $1 [^ ]* [^ ]* - fuse" /proc/self/mountinfo; }
cleanup() {
  [ -n "$SPID" ] && kill -TERM "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null || true
  for m in "$BASE/bmnt" "$BASE/sl"; do mounted "$m" && umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true; done
  [ -n "$BPID" ] && kill "$BPID" 2>/dev/null || true
  rm -rf "$W" "$BASE"
}
trap cleanup EXIT
rm -rf "$BASE"; mkdir -p "$BASE/raw" "$BASE/bsrc" "$BASE/bmnt" "$BASE/sl"
bindfs -f --multithreaded "$BASE/bsrc" "$BASE/bmnt" & BPID=$!
cat > "$W/sluice.toml" <<CFG
data_dir = "$W/data"
[sources.cap]
type = "fuse"
directories = ["$BASE/sl"]
lock_dir = "$W/locks"
[sinks.n]
type = "null"
inputs = ["cap"]
CFG
SLUICE_LOG=info NO_COLOR=1 "$SLUICE_BIN" run --config "$W/sluice.toml" 2> "$W/sluice.log" & SPID=$!
for m in "$BASE/bmnt" "$BASE/sl"; do
  for _ in $(seq 200); do mounted "$m" && break; sleep 0.05; done
  mounted "$m" || { echo "no mount on $m"; cat "$W/sluice.log"; exit 1; }
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TCK=$(getconf CLK_TCK)
dd_secs() { dd "$@" 2>&1 | awk '/copied/ { print $(NF-3) }'; }
R="$W/results"; : > "$R"
put() { echo "$1 $2 $3" >> "$R"; }

run_target() { # name dir daemon-pid
  local t=$1 d=$2 pid=${3:-} s c0 c1
  rm -f "$d"/*; sync
  [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
  s=$(dd_secs if=/dev/zero of="$d/dd100" bs=100 count="$SMALL" oflag=append conv=notrunc)
  [ -n "$pid" ] && { c1=$(cpu_ticks "$pid"); put "$t" cpu_us_per_write "$(awk -v a="$c0" -v b="$c1" -v n="$SMALL" -v k="$TCK" 'BEGIN { print (b - a) / k * 1e6 / n }')"; }
  put "$t" dd100_wps "$(awk -v s="$s" -v n="$SMALL" 'BEGIN { print n / s }')"
  read -r wps p50 p99 _ < <("$W/wbench" append "$d/lat100" "$SMALL" 100)
  put "$t" c100_wps "$wps"; put "$t" p50_us "$p50"; put "$t" p99_us "$p99"
  rm -f "$d"/*; sync
  s=$(dd_secs if=/dev/zero of="$d/k4" bs=4k count=$(( K4_MIB * 256 )))
  put "$t" k4_mbps "$(awk -v s="$s" -v m="$K4_MIB" 'BEGIN { print m * 1.048576 / s }')"
  rm -f "$d"/*; sync
  [ -n "$pid" ] && c0=$(cpu_ticks "$pid")
  s=$(dd_secs if=/dev/zero of="$d/m1" bs=1M count="$MIB")
  [ -n "$pid" ] && { c1=$(cpu_ticks "$pid"); put "$t" cpu_ms_per_mb "$(awk -v a="$c0" -v b="$c1" -v m="$MIB" -v k="$TCK" 'BEGIN { print (b - a) / k * 1e3 / (m * 1.048576) }')"; }
  put "$t" m1_mbps "$(awk -v s="$s" -v m="$MIB" 'BEGIN { print m * 1.048576 / s }')"
  rm -f "$d"/*; sync
  mkdir "$d/meta"
  put "$t" meta_fps "$("$W/wbench" meta "$d/meta" "$META")"
  rmdir "$d/meta"
}

for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  run_target raw "$BASE/raw"
  run_target bindfs "$BASE/bmnt" "$BPID"
  run_target sluice "$BASE/sl" "$SPID"
done

kill -TERM "$SPID"; wait "$SPID" || true; SPID=
STOP=$(grep "Capture stopped." "$W/sluice.log" || true)
field() { echo "$STOP" | tr ' ' '\n' | awk -F= -v k="$1" '$1 == k { print $2 }'; }
EXPECT_BYTES=$(( ROUNDS * (SMALL * 200 + (K4_MIB + MIB) * 1048576 + META * 100) ))

median() { # target metric
  awk -v t="$1" -v m="$2" '$1 == t && $2 == m { print $3 }' "$R" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
row() { # label metric format higher-is-better
  local raw b s
  raw=$(median raw "$2"); b=$(median bindfs "$2"); s=$(median sluice "$2")
  awk -v l="$1" -v r="$raw" -v b="$b" -v s="$s" -v f="$3" -v hi="$4" 'BEGIN {
    printf "%-30s %12s %12s %12s", l, (r == "-" ? "-" : sprintf(f, r)), sprintf(f, b), sprintf(f, s);
    if (hi == 1) printf "   %6.2fx   %8s", s / b, (r == "-" ? "-" : sprintf("%.3fx", s / r));
    else printf "   %6.2fx   %8s", b / s, (r == "-" ? "-" : sprintf("%.3fx", r / s));
    printf "\n" }'
}
echo
echo "bench/fuse.sh: $(nproc) cores, kernel $(uname -r), $ROUNDS rounds (median), dir $BASE"
echo "  100 B appends: $SMALL writes; 4 KiB: $K4_MIB MiB; 1 MiB: $MIB MiB; metadata: $META files"
printf "%-30s %12s %12s %12s   %7s   %8s\n" workload raw bindfs-mt sluice "vs bindfs" "vs raw"
row "100 B appends, dd (writes/s)" dd100_wps "%.0f" 1
row "100 B appends, C (writes/s)" c100_wps "%.0f" 1
row "100 B append p50 (us)" p50_us "%.1f" 0
row "100 B append p99 (us)" p99_us "%.1f" 0
row "4 KiB writes (MB/s)" k4_mbps "%.0f" 1
row "1 MiB writes (MB/s)" m1_mbps "%.0f" 1
row "create/rename/unlink (files/s)" meta_fps "%.0f" 1
row "daemon CPU per MB, 1 MiB (ms)" cpu_ms_per_mb "%.2f" 0
row "daemon CPU per 100 B write (us)" cpu_us_per_write "%.2f" 0
echo "(lower-is-better rows: the ratio is bindfs/sluice, so > 1 means sluice is better)"
echo "sluice capture: captured_bytes=$(field captured_bytes) of $EXPECT_BYTES written," \
  "captured_writes=$(field captured_writes) dropped_queue_full=$(field dropped_queue_full)"
small=$(awk -v s="$(median sluice dd100_wps)" -v b="$(median bindfs dd100_wps)" 'BEGIN { printf "%.2f", s / b }')
big=$(awk -v s="$(median sluice m1_mbps)" -v b="$(median bindfs m1_mbps)" 'BEGIN { printf "%.2f", s / b }')
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v >= g ? "met" : "MISSED") }'; }
echo "goal >= 1.5x bindfs on 100 B appends: ${small}x $(verdict "$small" 1.5);" \
  "goal >= 2x bindfs on 1 MiB writes: ${big}x $(verdict "$big" 2)"
[ "$(field captured_bytes)" = "$EXPECT_BYTES" ] || echo "WARNING: not every written byte was captured"
