#!/usr/bin/env bash
# Runs the forward-protocol decoder fuzz target (cargo-fuzz, libFuzzer) for
#   scripts/fuzz.sh [SECONDS]   (default 60)
# seeded with the protocol test vectors. Needs a nightly toolchain (sanitizers);
# installs cargo-fuzz when missing. Every crash found becomes a named unit test in
# crates/proto.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
secs=${1:-60}
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain on this machine; skipping the fuzz run"
  exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
corpus=$(mktemp -d); trap 'rm -rf "$corpus"' EXIT
find testdata/forward -name '*.bin' -exec cp {} "$corpus"/ \; 2>/dev/null || true
cd fuzz
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}/fuzz" \
  cargo +nightly fuzz run forward_decode "$corpus" -- -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 2>&1 | tail -15
