#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft, controller + broker in one JVM) in the
# foreground, for trying sluice's Kafka examples and for checks outside the tests.
#
#   scripts/kafka-dev.sh [--port N] [--data DIR] [--sasl]
#
#   --port N   client listener 127.0.0.1:N (default 9092); the controller listens
#              on N+1.
#   --data DIR log dirs and config (default data/kafka-dev-N). Kept across restarts:
#              a stopped and restarted broker still holds its records.
#   --sasl     clients authenticate with SASL/SCRAM (SHA-256 and SHA-512), the
#              standard authorizer is on (allow.everyone.if.no.acl.found=false)
#              and a super user is created; its name and password are printed.
#
# Prints a line containing `ready` once a metadata request answers. Stops cleanly on
# SIGTERM or Ctrl-C. Installs Kafka through scripts/install-kafka.sh when missing.
# Topics are created automatically on first use (auto.create.topics.enable=true,
# unlike the test brokers).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
port=9092 data="" sasl=0
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --sasl) sasl=1; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "kafka-dev.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
data="${data:-data/kafka-dev-$port}"
mkdir -p "$data"
data="$(cd "$data" && pwd)"
cport=$((port + 1))
home="$(bash "$here/install-kafka.sh" | tail -1)"
cp="$home/libs/*"
user=admin password=admin-secret

mode=plain; [ "$sasl" = 1 ] && mode=sasl
if [ -f "$data/.mode" ] && [ "$(cat "$data/.mode")" != "$mode" ]; then
  echo "kafka-dev.sh: $data was formatted for a $(cat "$data/.mode") broker; use another --data for $mode" >&2
  exit 2
fi

proto=PLAINTEXT
[ "$sasl" = 1 ] && proto=SASL_PLAINTEXT
props="$data/server.properties"
cat > "$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.listener.names=CONTROLLER
listeners=$proto://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=$proto://127.0.0.1:$port
inter.broker.listener.name=$proto
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.quorum.voters=1@127.0.0.1:$cport
log.dirs=$data/logs
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
PROPS
if [ "$sasl" = 1 ]; then
  jaas="org.apache.kafka.common.security.scram.ScramLoginModule required username=\"$user\" password=\"$password\";"
  cat >> "$props" <<PROPS
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$jaas
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=$jaas
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:$user;User:ANONYMOUS
PROPS
fi

if [ ! -f "$data/logs/meta.properties" ]; then
  scram=()
  [ "$sasl" = 1 ] && scram=(--add-scram "SCRAM-SHA-512=[name=$user,password=$password]"
                            --add-scram "SCRAM-SHA-256=[name=$user,password=$password]")
  java -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)" \
    -c "$props" "${scram[@]}" >"$data/format.log" 2>&1 || { cat "$data/format.log" >&2; exit 1; }
  echo "$mode" > "$data/.mode"
fi

# Ready = a metadata request answers (Python confluent-kafka; Debian's kcat,
# librdkafka 2.0.2, fails SCRAM against this broker with OpenSSL 3).
probe="from confluent_kafka.admin import AdminClient as A
c={'bootstrap.servers':'127.0.0.1:$port','socket.timeout.ms':2000}
if $sasl: c.update({'security.protocol':'SASL_PLAINTEXT','sasl.mechanisms':'SCRAM-SHA-512','sasl.username':'$user','sasl.password':'$password'})
A(c).list_topics(timeout=2)"
(
  for _ in $(seq 600); do
    if python3 -c "$probe" >/dev/null 2>&1; then
      echo "kafka-dev.sh: ready on 127.0.0.1:$port (data in $data, log $data/server.log)"
      [ "$sasl" = 1 ] && echo "kafka-dev.sh: SASL/SCRAM super user: $user password: $password"
      exit 0
    fi
    sleep 0.2
  done
  echo "kafka-dev.sh: not ready after 120 s; see $data/server.log" >&2
) &
exec java -Xmx1g -Dkafka.logs.dir="$data" -Dlog4j2.configurationFile="$here/kafka/log4j2.xml" \
  -cp "$cp" kafka.Kafka "$props"
