# Sourced by the benchmarks: one local Apache Kafka broker (scripts/kafka-dev.sh,
# KRaft, data under $WORK/kafka) for a whole benchmark run, a fresh topic per
# measurement. Needs ROOT and WORK set.
#
#   start_kafka                 # sets KAFKA_PORT, KAFKA_PID; waits until ready
#   kafka_topic NAME [PARTS]    # creates NAME (1 partition by default)
#   stop_kafka                  # SIGTERM, wait

KAFKA_PID=""
KAFKA_PORT=""

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_kafka() {
  KAFKA_PORT=$(free_port)
  bash "$ROOT/scripts/kafka-dev.sh" --port "$KAFKA_PORT" --data "$WORK/kafka" >"$WORK/kafka.log" 2>&1 &
  KAFKA_PID=$!
  for _ in $(seq 600); do
    grep -q "ready on" "$WORK/kafka.log" 2>/dev/null && return 0
    kill -0 "$KAFKA_PID" 2>/dev/null || break
    sleep 0.2
  done
  echo "bench: Apache Kafka did not start; see $WORK/kafka.log and $WORK/kafka/server.log" >&2
  tail -20 "$WORK/kafka.log" >&2
  exit 1
}

kafka_topic() {
  python3 - "127.0.0.1:$KAFKA_PORT" "$1" "${2:-1}" <<'PY'
import sys
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": sys.argv[1]})
for f in admin.create_topics([NewTopic(sys.argv[2], int(sys.argv[3]), 1)], operation_timeout=30).values():
    f.result()
PY
}

stop_kafka() {
  if [ -n "$KAFKA_PID" ]; then
    kill "$KAFKA_PID" 2>/dev/null || true
    wait "$KAFKA_PID" 2>/dev/null || true
    KAFKA_PID=""
  fi
}
