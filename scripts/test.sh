#!/usr/bin/env bash
# The whole test suite: installs what the tests need when missing (fuse3, the
# Apache Kafka broker through Maven, kcat, Python clients), then runs every test of every
# crate. Real broker, real FUSE mounts, real third-party clients.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# A target dir outside the clone is reused between runs (CI warm cache).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/sluice-target}"
bash scripts/install-deps.sh
cargo test --workspace --locked "$@"
