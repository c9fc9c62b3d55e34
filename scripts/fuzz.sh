#!/usr/bin/env bash
# Runs the forward-protocol decoder fuzz target (cargo-fuzz, libFuzzer) for
#   scripts/fuzz.sh [SECONDS]   (default 60)
# seeded with the protocol test vectors. Every crash found becomes a named unit
# test in crates/proto. cargo-fuzz needs nightly compiler flags (sanitizers,
# -Z options): the machine's one stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1, so a fresh machine fuzzes without fetching a nightly.
# cargo-fuzz is installed from crates.io when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs=${1:-60}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
corpus=$(mktemp -d); trap 'rm -rf "$corpus"' EXIT
find testdata/forward -name '*.bin' -exec cp {} "$corpus"/ \; 2>/dev/null || true
cd fuzz
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}/fuzz" \
  RUSTC_BOOTSTRAP=1 cargo fuzz run forward_decode "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -15
