#!/usr/bin/env bash
# Installs Apache Kafka's broker and tools as a Maven classpath, only when missing:
# `mvn dependency:copy-dependencies` of scripts/kafka/pom.xml into
# $SLUICE_KAFKA_HOME/libs (default /var/tmp/sluice-kafka, outside the clone, so CI
# and other clones reuse it). No download other than through Maven. About 15 s on a
# fresh machine (~95 jars, 90 MB).
#
# Prints the install directory on its last line. The broker runs as
#   java -cp "$SLUICE_KAFKA_HOME/libs/*" kafka.Kafka server.properties
# (see scripts/kafka-dev.sh and crates/sluice/tests/it/kafka_support.rs).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
home="${SLUICE_KAFKA_HOME:-/var/tmp/sluice-kafka}"
pom="$here/kafka/pom.xml"
stamp="$(sha256sum "$pom" | cut -c1-16)"
if [ -f "$home/libs/.installed" ] && [ "$(cat "$home/libs/.installed")" = "$stamp" ]; then
  echo "$home"
  exit 0
fi
command -v mvn >/dev/null 2>&1 || { echo "install-kafka: mvn (Maven) is missing: apt-get install maven" >&2; exit 1; }
command -v java >/dev/null 2>&1 || { echo "install-kafka: java (17+) is missing: apt-get install openjdk-17-jre-headless" >&2; exit 1; }
echo "install-kafka: mvn dependency:copy-dependencies into $home/libs" >&2
rm -rf "$home/libs.tmp"
mkdir -p "$home"
mvn -q -B -f "$pom" -Dstyle.color=never dependency:copy-dependencies \
  -DoutputDirectory="$home/libs.tmp" -DincludeScope=runtime >&2
ls "$home/libs.tmp"/kafka_2.13-*.jar >/dev/null
echo "$stamp" > "$home/libs.tmp/.installed"
rm -rf "$home/libs"
mv "$home/libs.tmp" "$home/libs"
echo "$home"
