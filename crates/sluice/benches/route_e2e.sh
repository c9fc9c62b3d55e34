#!/usr/bin/env bash
# End-to-end cost of the tenant route: the same N lines through
#   A) exec(cat) → kafka, one topic            (no routing)
#   C) exec(cat) → tenant route → kafka, one topic       (routing cost alone)
#   B) exec(cat) → tenant route → kafka, one topic per tenant (10,000 tenants)
#   B') as B with `enable.idempotence = false`
#   BP, BP') as B and B' with the topics spread over `producers = $PRODUCERS`
#      librdkafka clients (default 16)
# and, for what part is the broker's and librdkafka's, the same payloads produced
# by Python confluent-kafka (librdkafka 2.16, same producer settings) to one topic
# (P1) and spread over the per-tenant topics (PN, PN' without idempotence),
# against a local Apache Kafka broker (scripts/kafka-dev.sh); prints lines/s and
# the ratios.
# Topics are created before anything is measured. Each sluice run ends by itself
# (cat ends, sinks drain, sluice exits), so wall time is the time to deliver
# every line.
#
#   crates/sluice/benches/route_e2e.sh [LINES] [TENANTS] [PER_TENANT_LINES]
#   (SKIP_PER_TENANT=1: A and C only; PER_TENANT_LINES, default LINES, is the
#   input of the per-topic runs, which are slow on this broker)
#
# Needs: Apache Kafka (scripts/install-deps.sh), python3 with confluent-kafka, and a
# release build: cargo build --release -p sluice (CARGO_TARGET_DIR respected).
set -euo pipefail
LINES=${1:-1000000}
TENANTS=${2:-10000}
PT_LINES=${3:-$LINES}
PRODUCERS=${PRODUCERS:-16}
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
SLUICE=${SLUICE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/sluice}
WORK=$(mktemp -d)
# shellcheck source=bench/lib/kafka.sh
. "$ROOT/bench/lib/kafka.sh"
cleanup() { stop_kafka; rm -rf "$WORK"; }
trap cleanup EXIT
start_kafka
PORT=$KAFKA_PORT

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
head -n "$PT_LINES" "$WORK/input.log" >"$WORK/input-pt.log"
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
sed "s#$WORK/input.log#$WORK/input-pt.log#" "$WORK/b.toml" >"$WORK/b-pt.toml"
sed 's/^"linger.ms" = 100/"linger.ms" = 100\n"enable.idempotence" = false/' "$WORK/b-pt.toml" >"$WORK/b-noidem.toml"
sed "s/^topic = \(.*\)/topic = \1\nproducers = $PRODUCERS/" "$WORK/b-pt.toml" >"$WORK/bp.toml"
sed "s/^topic = \(.*\)/topic = \1\nproducers = $PRODUCERS/" "$WORK/b-noidem.toml" >"$WORK/bp-noidem.toml"

run() {
  local start end
  start=$(date +%s.%N)
  SLUICE_LOG=warn "$SLUICE" run --config "$1" 2>>"$WORK/sluice.log"
  end=$(date +%s.%N)
  python3 -c "print(f'{${2:-$LINES} / ($end - $start):.0f}')"
}
# The broker-only baseline: librdkafka through Python, the sink's settings.
pyprod() {
  python3 - "$PORT" "$TENANTS" "$PT_LINES" "$1" "$2" <<'PY'
import sys, time
from confluent_kafka import Producer
port, tenants, lines, spread, idem = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
payload = b"203.0.113.9 - - [21/Nov/2026:10:00:00 +0000] \"GET /v1/objects/abcdef0123456789 HTTP/1.1\" 200 5120"
topics = [f"logs-c{i}" for i in range(tenants)] if spread else ["logs-all"]
p = Producer({"bootstrap.servers": f"127.0.0.1:{port}", "linger.ms": 100, "batch.num.messages": 10000,
              "queue.buffering.max.messages": 250000, "acks": "all", "enable.idempotence": idem})
ok = [0]
def cb(err, msg):
    ok[0] += err is None
t = time.time()
for i in range(lines):
    while True:
        try:
            p.produce(topics[i % len(topics)], payload, on_delivery=cb)
            break
        except BufferError:
            p.poll(0.01)
    if i % 1000 == 0:
        p.poll(0)
p.flush(3600)
dt = time.time() - t
assert ok[0] == lines, f"{ok[0]} of {lines} delivered"
print(f"{lines / dt:.0f}")
PY
}
A1=$(run "$WORK/a.toml"); C1=$(run "$WORK/c.toml"); A2=$(run "$WORK/a.toml"); C2=$(run "$WORK/c.toml")
# B is slow on a broker that must serve 10,000 topics; SKIP_PER_TENANT=1 skips it.
if [ "${SKIP_PER_TENANT:-0}" = 1 ]; then B1=0; B2=0; BP1=0; BP2=0; P1=0; PN=0; PN2=0; else
  P1=$(pyprod 0 true)
  B1=$(run "$WORK/b-pt.toml" "$PT_LINES"); BP1=$(run "$WORK/bp.toml" "$PT_LINES")
  B2=$(run "$WORK/b-noidem.toml" "$PT_LINES"); BP2=$(run "$WORK/bp-noidem.toml" "$PT_LINES")
  PN=$(pyprod 1 true); PN2=$(pyprod 1 false)
fi
python3 - "$A1" "$A2" "$C1" "$C2" "$B1" "$B2" "$P1" "$PN" "$PN2" "$LINES" "$TENANTS" "$PT_LINES" "$BP1" "$BP2" "$PRODUCERS" <<'PY'
import sys
a1, a2, c1, c2, b1, b2, p1, pn, pn2 = map(float, sys.argv[1:10])
bp1, bp2, k = float(sys.argv[13]), float(sys.argv[14]), sys.argv[15]
a, c = max(a1, a2), max(c1, c2)
r = lambda x, y: f"{x / y:.3f}" if y else "-"
print(f"lines={sys.argv[10]} tenants={sys.argv[11]} per-tenant runs: {sys.argv[12]} lines")
print(f"A  exec -> kafka, one topic:                      {a1:,.0f} / {a2:,.0f} lines/s")
print(f"C  exec -> tenant route -> kafka, one topic:      {c1:,.0f} / {c2:,.0f} lines/s")
print(f"B  exec -> tenant route -> kafka, topic/tenant:   {b1:,.0f} lines/s")
print(f"B' same, enable.idempotence = false:              {b2:,.0f} lines/s")
print(f"BP as B, producers = {k}:                         {bp1:,.0f} lines/s")
print(f"BP' as B', producers = {k}:                       {bp2:,.0f} lines/s")
print(f"P1 confluent-kafka alone, one topic:              {p1:,.0f} msgs/s")
print(f"PN confluent-kafka alone, topic/tenant:           {pn:,.0f} msgs/s")
print(f"PN' same, enable.idempotence = false:             {pn2:,.0f} msgs/s")
print(f"routing cost end to end, C/A (best of 2): {r(c, a)}")
print(f"per-tenant topics, B/A: {r(b1, a)}   B'/A: {r(b2, a)}   BP/A: {r(bp1, a)}   BP'/A: {r(bp2, a)}")
print(f"broker + librdkafka alone, PN/P1: {r(pn, p1)}   PN'/P1: {r(pn2, p1)}")
print(f"sluice vs the same producer alone, B/PN: {r(b1, pn)}   B'/PN': {r(b2, pn2)}")
PY
