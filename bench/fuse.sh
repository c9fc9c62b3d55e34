#!/usr/bin/env bash
# Write cost of sluice's `fuse` source, in one run, against the raw directory and against
# bindfs --multithreaded (Debian's C FUSE passthrough: what plain FUSE costs here). Two
# sluice targets: the default (write-through, passthrough reads) and `writeback = true`.
#   bench/fuse.sh [--rounds R] [--reps K] [--small N] [--block-mib M] [--meta F] [--dir BASE]
#   (defaults: 7 rounds, 3 reps, 50,000 appends, 256 MiB of 1 MiB writes, 128 MiB of 4 KiB,
#   3,000 files)
# Workloads per target (median of R rounds, targets interleaved within a round; the 4 KiB and
# 1 MiB workloads K times per round, so each round's ratio compares medians of K runs):
#   100 B appends, one write(2) each: `dd bs=100 oflag=append` (writes/s) and a C loop
#   timing every write (writes/s, p50/p99 latency); 4 KiB and 1 MiB sequential writes
#   with dd (MB/s); metadata: F × (create + 100 B write + close, rename, unlink) (files/s);
#   CPU of the FUSE daemon (bindfs, or the whole sluice process: FUSE threads, drain,
#   null sink) per MB of 1 MiB writes and per 100 B write, and CPU of the writer (dd) per MB;
#   sequential read of an M MiB file (`dd bs=1M`, backing file in the page cache) (MB/s).
# sluice runs the real daemon: fuse source → null sink. At the end it is stopped and its
# "Capture stopped." line must show every byte captured (no queue drops).
# The written bytes come from a file of random bytes in /dev/shm, not /dev/zero: logs are
# not zeros, and pages full of zeros are what a VM host deduplicates.
# On the Firecracker VM used for development (free page reporting on) a large write into
# fresh page cache costs several times more at random, with or without FUSE: raw
# `dd bs=1M` of 256 MiB took 0.13-0.77 s of system time from run to run, `dd bs=4k`
# 0.21-0.23 s (perf: the time is in copy_folio_from_iter_atomic, i.e. first touches of
# freshly allocated large folios). Hence several runs per round for the block workloads.
# Needs /dev/fuse and root (or fusermount3); installs bindfs with apt-get if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=7 REPS=3 SMALL=50000 MIB=256 K4_MIB=128 META=3000 BASE=/var/tmp/sluice-fuse-bench
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
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
SRC=$(mktemp /dev/shm/sluice-fuse-bench.XXXXXX)
SRC_MIB=$(( MIB > K4_MIB ? MIB : K4_MIB )); SRC_MIB=$(( SRC_MIB > SMALL / 10000 + 1 ? SRC_MIB : SMALL / 10000 + 1 ))
head -c "$(( SRC_MIB << 20 ))" /dev/urandom > "$SRC"

BPID= SPID=
mounted() { # a FUSE mount on exactly $1
  awk -v m="$1" '$5 == m { for (i = 6; i < NF; i++) if ($i == "-") { if ($(i + 1) ~ /^fuse/) f = 1; break } }
    END { exit !f }' /proc/self/mountinfo
}
cleanup() {
  [ -n "$SPID" ] && kill -TERM "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null || true
  for m in "$BASE/bmnt" "$BASE/sl" "$BASE/slwb"; do mounted "$m" && umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true; done
  [ -n "$BPID" ] && kill "$BPID" 2>/dev/null || true
  rm -rf "$W" "$BASE" "$SRC"
}
trap cleanup EXIT
rm -rf "$BASE"; mkdir -p "$BASE/raw" "$BASE/bsrc" "$BASE/bmnt" "$BASE/sl" "$BASE/slwb"
bindfs -f --multithreaded "$BASE/bsrc" "$BASE/bmnt" & BPID=$!
cat > "$W/sluice.toml" <<CFG
data_dir = "$W/data"
[sources.cap]
type = "fuse"
directories = ["$BASE/sl"]
lock_dir = "$W/locks"
[sources.capwb]
type = "fuse"
directories = ["$BASE/slwb"]
lock_dir = "$W/locks"
writeback = true
[sinks.n]
type = "null"
inputs = ["cap", "capwb"]
CFG
SLUICE_LOG=info NO_COLOR=1 "$SLUICE_BIN" run --config "$W/sluice.toml" 2> "$W/sluice.log" & SPID=$!
for m in "$BASE/bmnt" "$BASE/sl" "$BASE/slwb"; do
  for _ in $(seq 200); do mounted "$m" && break; sleep 0.05; done
  mounted "$m" || { echo "no mount on $m"; cat "$W/sluice.log"; exit 1; }
done

# Every file of a target directory but the read workload's.
wipe() { find "$1" -maxdepth 1 -type f ! -name rd.bin -delete; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# CPU of this shell's finished children (the writer: dd, in a $(...) subshell).
child_ticks() { awk '{ print $16 + $17 }' "/proc/$$/stat"; }
TCK=$(getconf CLK_TCK)
dd_secs() { dd "$@" 2>&1 | awk '/copied/ { print $(NF-3) }'; }
R="$W/results"; : > "$R"
r=0
put() { echo "$1 $2 $3 $r" >> "$R"; }

cpu_start() { C0=; [ -n "${1:-}" ] && C0=$(cpu_ticks "$1"); return 0; }
cpu_put() { # target metric pid per-units scale
  [ -n "${3:-}" ] || return 0
  put "$1" "$2" "$(awk -v a="$C0" -v b="$(cpu_ticks "$3")" -v n="$4" -v k="$TCK" -v sc="$5" 'BEGIN { print (b - a) / k * sc / n }')"
}
# One workload on one target: name dir daemon-pid.
w_dd100() {
  local s; wipe "$2"; sync; cpu_start "${3:-}"
  s=$(dd_secs if="$SRC" of="$2/dd100" bs=100 count="$SMALL" oflag=append conv=notrunc)
  cpu_put "$1" cpu_us_per_write "${3:-}" "$SMALL" 1e6
  put "$1" dd100_wps "$(awk -v s="$s" -v n="$SMALL" 'BEGIN { print n / s }')"
}
w_c100() {
  local wps p50 p99; wipe "$2"; sync
  read -r wps p50 p99 _ < <("$W/wbench" append "$2/lat100" "$SMALL" 100)
  put "$1" c100_wps "$wps"; put "$1" p50_us "$p50"; put "$1" p99_us "$p99"
}
w_k4() {
  local s; wipe "$2"; sync
  s=$(dd_secs if="$SRC" of="$2/k4" bs=4k count=$(( K4_MIB * 256 )))
  put "$1" k4_mbps "$(awk -v s="$s" -v m="$K4_MIB" 'BEGIN { print m * 1.048576 / s }')"
}
w_m1() {
  local s w0 mb; wipe "$2"; sync; cpu_start "${3:-}"; w0=$(child_ticks)
  s=$(dd_secs if="$SRC" of="$2/m1" bs=1M count="$MIB")
  mb=$(awk -v m="$MIB" 'BEGIN { print m * 1.048576 }')
  put "$1" wcpu_ms_per_mb "$(awk -v a="$w0" -v b="$(child_ticks)" -v k="$TCK" -v n="$mb" 'BEGIN { print (b - a) / k * 1e3 / n }')"
  cpu_put "$1" cpu_ms_per_mb "${3:-}" "$mb" 1e3
  put "$1" m1_mbps "$(awk -v s="$s" -v m="$MIB" 'BEGIN { print m * 1.048576 / s }')"
}
w_read() {
  local s; s=$(dd_secs if="$2/rd.bin" of=/dev/null bs=1M)
  put "$1" read_mbps "$(awk -v s="$s" -v m="$MIB" 'BEGIN { print m * 1.048576 / s }')"
}
w_meta() {
  wipe "$2"; mkdir "$2/meta"; sync
  put "$1" meta_fps "$("$W/wbench" meta "$2/meta" "$META")"
  rmdir "$2/meta"
}

# Targets back to back for each workload (bindfs and sluice in alternating order), so that
# each round's ratios compare runs made seconds apart: on a shared VM the cost of a FUSE
# round trip (two cross-CPU wake-ups) swings several-fold from one minute to the next.
# Per round: "target metric median" over that round's runs.
round_medians() {
  awk -v r="$1" '$4 == r && $1 !~ /^ratio/' "$R" | sort -k1,1 -k2,2 -k3,3g | awk '
    function flush() { if (n) print p, (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2); n = 0 }
    { k = $1 " " $2; if (k != p) flush(); p = k; v[++n] = $3 } END { flush() }'
}
# The read workload's file, written once through each target (captured by sluice), then
# read once to have the backing file in the page cache.
for t in raw bmnt sl slwb; do
  dd if="$SRC" of="$BASE/$t/rd.bin" bs=1M count="$MIB" status=none
  dd if="$BASE/$t/rd.bin" of=/dev/null bs=1M status=none
done
flip=0
for r in $(seq "$ROUNDS"); do
  echo "round $r/$ROUNDS ..." >&2
  for w in w_dd100 w_c100 w_k4 w_m1 w_read w_meta; do
    reps=1; case $w in w_k4 | w_m1 | w_read) reps=$REPS ;; esac
    for _ in $(seq "$reps"); do
      "$w" raw "$BASE/raw"
      flip=$(( 1 - flip ))
      if [ "$flip" = 1 ]; then
        "$w" bindfs "$BASE/bmnt" "$BPID"; "$w" sluice "$BASE/sl" "$SPID"; "$w" sluicewb "$BASE/slwb" "$SPID"
      else
        "$w" sluicewb "$BASE/slwb" "$SPID"; "$w" sluice "$BASE/sl" "$SPID"; "$w" bindfs "$BASE/bmnt" "$BPID"
      fi
    done
  done
  for t in raw bmnt sl slwb; do wipe "$BASE/$t"; done
  # Per round: each sluice target over bindfs ("ratio", "ratiowb") and over raw.
  round_medians "$r" | awk -v r="$r" '{ v[$1 " " $2] = $3 } END {
      for (k in v) { split(k, p, " ");
        if (p[1] != "sluice" && p[1] != "sluicewb") continue
        n = (p[1] == "sluice" ? "ratio" : "ratiowb")
        if ((("bindfs " p[2]) in v) && v["bindfs " p[2]] > 0) print n, p[2], v[k] / v["bindfs " p[2]], r
        if ((("raw " p[2]) in v) && v["raw " p[2]] > 0) print n "raw", p[2], v[k] / v["raw " p[2]], r } }' >> "$R"
done

kill -TERM "$SPID"; wait "$SPID" || true; SPID=
stop_line() { grep "Capture stopped." "$W/sluice.log" | grep -F "path=$1 " || true; }
field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1 == k { print $2 }'; }
STOP=$(stop_line "$BASE/sl"); STOPWB=$(stop_line "$BASE/slwb")
EXPECT_BYTES=$(( ROUNDS * (SMALL * 200 + REPS * (K4_MIB + MIB) * 1048576 + META * 100) + MIB * 1048576 ))

median() { # target metric
  awk -v t="$1" -v m="$2" '$1 == t && $2 == m { print $3 }' "$R" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
range() { # ratio-name metric: min-max of the per-round ratios
  awk -v n="$1" -v m="$2" '$1 == n && $2 == m { v = $3; if (c++ == 0 || v < lo) lo = v; if (v > hi) hi = v }
    END { if (c) printf "%.2f-%.2f", lo, hi; else print "-" }' "$R"
}
row() { # label metric format
  local raw b s wb
  raw=$(median raw "$2"); b=$(median bindfs "$2"); s=$(median sluice "$2"); wb=$(median sluicewb "$2")
  awk -v l="$1" -v r="$raw" -v b="$b" -v s="$s" -v wb="$wb" -v f="$3" \
      -v q="$(median ratio "$2")" -v rg="$(range ratio "$2")" -v qr="$(median ratioraw "$2")" \
      -v qw="$(median ratiowb "$2")" -v rgw="$(range ratiowb "$2")" -v qwr="$(median ratiowbraw "$2")" 'BEGIN {
    printf "%-30s %10s %10s %10s %10s", l, (r == "-" ? "-" : sprintf(f, r)), sprintf(f, b), sprintf(f, s), (wb == "-" ? "-" : sprintf(f, wb))
    printf "  %5.2fx (%s) %7s", q, rg, (qr == "-" ? "-" : sprintf("%.3fx", qr))
    printf "  %6.2fx (%s) %7s\n", qw, rgw, (qwr == "-" ? "-" : sprintf("%.3fx", qwr)) }'
}
echo
echo "bench/fuse.sh: $(nproc) cores, kernel $(uname -r), $ROUNDS rounds (median; block and read workloads $REPS runs per round), dir $BASE ($(stat -f -c %T "$BASE" 2>/dev/null || echo '?'))"
echo "  100 B appends: $SMALL writes; 4 KiB: $K4_MIB MiB; 1 MiB: $MIB MiB; read: $MIB MiB; metadata: $META files"
printf "%-30s %10s %10s %10s %10s  %-20s %7s  %-21s %7s\n" workload raw bindfs-mt sluice sluice+wb \
  "sluice/bindfs" "/raw" "sluice+wb/bindfs" "/raw"
row "100 B appends, dd (writes/s)" dd100_wps "%.0f"
row "100 B appends, C (writes/s)" c100_wps "%.0f"
row "100 B append p50 (us)" p50_us "%.1f"
row "100 B append p99 (us)" p99_us "%.1f"
row "4 KiB writes (MB/s)" k4_mbps "%.0f"
row "1 MiB writes (MB/s)" m1_mbps "%.0f"
row "sequential read (MB/s)" read_mbps "%.0f"
row "create/rename/unlink (files/s)" meta_fps "%.0f"
row "daemon CPU per MB, 1 MiB (ms)" cpu_ms_per_mb "%.2f"
row "writer CPU per MB, 1 MiB (ms)" wcpu_ms_per_mb "%.2f"
row "daemon CPU per 100 B write (us)" cpu_us_per_write "%.2f"
echo "(columns: medians of $ROUNDS rounds; ratios: median and range of the per-round ratios;" \
  "for latency and CPU rows lower is better, so < 1 favours sluice)"
for t in sl slwb; do
  line=$STOP; [ "$t" = slwb ] && line=$STOPWB
  echo "sluice capture ($t): captured_bytes=$(field "$line" captured_bytes) of $EXPECT_BYTES written," \
    "captured_writes=$(field "$line" captured_writes) dropped_queue_full=$(field "$line" dropped_queue_full)"
  [ "$(field "$line" captured_bytes)" = "$EXPECT_BYTES" ] || echo "WARNING: not every written byte was captured ($t)"
done
verdict() { awk -v v="$1" -v g="$2" 'BEGIN { print (v >= g ? "met" : "MISSED") }'; }
wbr=$(median ratiowbraw dd100_wps); wbb=$(median ratiowb dd100_wps); rd=$(median ratioraw read_mbps)
printf "goal: writeback 100 B appends (dd) >= 0.3x raw: %.3fx %s, >= 10x bindfs: %.2fx %s; passthrough read vs raw: %.2fx\n" \
  "$wbr" "$(verdict "$wbr" 0.3)" "$wbb" "$(verdict "$wbb" 10)" "$rd"
