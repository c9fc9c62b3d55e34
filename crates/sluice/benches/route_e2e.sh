#!/usr/bin/env bash
# End-to-end cost of the tenant route: the same N lines through
#   A) exec(cat) → kafka, one topic            (no routing)
#   C) exec(cat) → tenant route → kafka, one topic       (routing cost alone)
#   B) exec(cat) → tenant route → kafka, one topic per tenant (10,000 tenants)
# against a local tansu broker (memory storage); prints lines/s and C/A, B/A.
# Each run ends by itself (cat ends, sinks drain, sluice exits), so wall time is
# the time to deliver every line.
#
#   crates/sluice/benches/route_e2e.sh [LINES] [TENANTS]     (SKIP_PER_TENANT=1: A and C only)
#
# Needs: tansu (scripts/install-deps.sh), python3 with confluent-kafka, and a
# release build: cargo build --release -p sluice (CARGO_TARGET_DIR respected).
set -euo pipefail
LINES=${1:-1000000}
TENANTS=${2:-10000}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
SLUICE=${SLUICE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
TANSU=${TANSU:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
WORK=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { [ -n "${BROKER:-}" ] && kill "$BROKER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

"$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
  --storage-engine memory://tansu/ >"$WORK/broker.log" 2>&1 &
BROKER=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

python3 - "$PORT" "$TENANTS" "$LINES" "$WORK" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
port, tenants, lines, work = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
a = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"})
names = ["logs-all"] + [f"logs-c{i}" for i in range(tenants)]
for i in range(0, len(names), 1000):
    for t, f in a.create_topics([NewTopic(n, 1, 1) for n in names[i:i + 1000]]).items():
        f.result()
with open(f"{work}/tenants.txt", "w") as f:
    f.write("\n".join(f"c{i}" for i in range(tenants)) + "\n")
payload = "203.0.113.9 - - [21/Nov/2026:10:00:00 +0000] \"GET /v1/objects/abcdef0123456789 HTTP/1.1\" 200 5120"
with open(f"{work}/input.log", "w") as f:
    for i in range(lines):
        f.write(f"c{i % tenants} {payload}\n")
PY

common() {
  cat <<EOF
data_dir = "$WORK/data"
shutdown_timeout_secs = 120
[sources.edge]
type = "exec"
restart = "never"
command = ["cat", "$WORK/input.log"]
EOF
}
sink() {
  cat <<EOF
[sinks.k]
type = "kafka"
inputs = ["$1"]
brokers = "127.0.0.1:$PORT"
topic = "$2"
encoding = "raw"
buffer = { max_events = 250000 }
[sinks.k.librdkafka]
"linger.ms" = 100
"batch.num.messages" = 10000
"queue.buffering.max.messages" = 250000
EOF
}
{ common; sink edge logs-all; } >"$WORK/a.toml"
{ common; cat <<EOF
[routes.by_tenant]
type = "tenant"
inputs = ["edge"]
strip = true
active_list = "$WORK/tenants.txt"
EOF
  sink by_tenant 'logs-{tenant}'; } >"$WORK/b.toml"
# C: the route in the path, one topic: the routing cost alone, end to end.
sed 's/^topic = .*/topic = "logs-all"/' "$WORK/b.toml" >"$WORK/c.toml"

run() {
  local start end
  start=$(date +%s.%N)
  SLUICE_LOG=warn "$SLUICE" run --config "$1" 2>>"$WORK/sluice.log"
  end=$(date +%s.%N)
  python3 -c "print(f'{$LINES / ($end - $start):.0f}')"
}
A1=$(run "$WORK/a.toml"); C1=$(run "$WORK/c.toml"); A2=$(run "$WORK/a.toml"); C2=$(run "$WORK/c.toml")
# B is slow on a broker that must learn 10,000 topics; SKIP_PER_TENANT=1 skips it.
if [ "${SKIP_PER_TENANT:-0}" = 1 ]; then B1=0; else B1=$(run "$WORK/b.toml"); fi
python3 - "$A1" "$A2" "$C1" "$C2" "$B1" "$LINES" "$TENANTS" <<'PY'
import sys
a1, a2, c1, c2, b1 = map(float, sys.argv[1:6])
a, c = max(a1, a2), max(c1, c2)
print(f"lines={sys.argv[6]} tenants={sys.argv[7]}")
print(f"A exec -> kafka, one topic:                  {a1:,.0f} / {a2:,.0f} lines/s")
print(f"C exec -> tenant route -> kafka, one topic:  {c1:,.0f} / {c2:,.0f} lines/s")
print(f"B exec -> tenant route -> kafka, topic/tenant: {b1:,.0f} lines/s")
print(f"routing cost end to end, C/A (best of 2): {c / a:.2f}")
print(f"per-tenant topics, B/A:                   {b1 / a:.2f}")
PY
