#!/usr/bin/env bash
# A local Kafka-compatible broker (tansu) for trying the kafka sink by hand.
#
#   scripts/broker.sh                       # 127.0.0.1:9092, memory storage, foreground
#   PORT=19092 STORAGE=sqlite scripts/broker.sh logs-app:3 other
#
# Arguments are topics to create once the broker is up, `NAME[:PARTITIONS]`
# (default 1): this broker never creates topics by itself. STORAGE=sqlite keeps
# data in ./tansu.db (survives restarts); memory (default) loses it on exit.
# Stop with Ctrl-C. Install the broker with scripts/install-deps.sh.
# Quirks worth knowing (../shared/kafka/README.md): Debian's kcat cannot talk to
# it (use Python confluent-kafka), its high watermark is off (count by reading),
# and CreateAcls can abort librdkafka.
set -euo pipefail

PORT=${PORT:-9092}
STORAGE=${STORAGE:-memory}
export PATH="$HOME/.cargo/bin:$PATH"
command -v tansu >/dev/null || { echo "broker.sh: tansu missing; run scripts/install-deps.sh" >&2; exit 2; }

case "$STORAGE" in
  memory) ENGINE="memory://tansu/" ;;
  sqlite) ENGINE="sqlite://tansu.db" ;;
  *) echo "broker.sh: STORAGE is memory or sqlite" >&2; exit 2 ;;
esac
URL="tcp://127.0.0.1:$PORT"

if [ $# -gt 0 ]; then
  (
    for _ in $(seq 200); do
      (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
      sleep 0.05
    done
    for t in "$@"; do
      name=${t%%:*}; parts=1; [ "$name" != "$t" ] && parts=${t#*:}
      tansu topic create --broker "$URL" --partitions "$parts" "$name" >/dev/null 2>&1 \
        && echo "broker.sh: topic $name ($parts partitions)" \
        || echo "broker.sh: topic $name not created (exists already?)" >&2
    done
  ) &
fi
exec tansu broker --listener-url "$URL" --advertised-listener-url "$URL" --storage-engine "$ENGINE"
