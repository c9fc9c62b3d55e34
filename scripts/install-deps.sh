#!/usr/bin/env bash
# Installs what the test suite needs, only when missing: fuse3 (fusermount3),
# util-linux `logger` and `script`, git, groff, systemd (systemd-analyze), cargo-deb, rsyslog with its OpenSSL driver (a
# real syslog relay for the syslog source), logrotate, kcat, Apache Kafka (through
# Maven, scripts/install-kafka.sh), and the Python clients used as independent
# peers (confluent-kafka, fluent-logger, boto3 with moto's S3 server, azure-storage-blob),
# and Azurite (npm) for the archive's Azure tests.
set -euo pipefail

need_apt=()
command -v fusermount3 >/dev/null 2>&1 || need_apt+=(fuse3)
command -v logger >/dev/null 2>&1 || need_apt+=(bsdutils)
# `script` gives the log-colour test a terminal; git lists a fresh clone's files.
command -v script >/dev/null 2>&1 || need_apt+=(bsdutils)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# groff renders `sluice man` in its test.
command -v groff >/dev/null 2>&1 || need_apt+=(groff-base)
# The syslog tests run rsyslogd in the foreground with their own config (omfwd,
# over TLS with the OpenSSL netstream driver).
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || need_apt+=(rsyslog)
dpkg -s rsyslog-openssl >/dev/null 2>&1 || need_apt+=(rsyslog-openssl)
command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ] || need_apt+=(logrotate)
command -v cmake >/dev/null 2>&1 || need_apt+=(cmake)
[ -e /usr/include/zlib.h ] || need_apt+=(zlib1g-dev)
# The kafka sink's bundled librdkafka links OpenSSL (TLS, SASL SCRAM); the Kafka
# benchmark (bench/kafka.sh) times processes with /usr/bin/time.
[ -e /usr/include/openssl/ssl.h ] || need_apt+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
[ -x /usr/bin/time ] || need_apt+=(time)
# The syslog source's named time zones (timezone = "Europe/Paris") read the tz database.
[ -e /usr/share/zoneinfo/Europe/Paris ] || need_apt+=(tzdata)
# Apache Kafka runs on Java 17 and is fetched by Maven; kcat is a tenant bundle's client.
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
command -v kcat >/dev/null 2>&1 || need_apt+=(kcat)
command -v dot >/dev/null 2>&1 || need_apt+=(graphviz)
# Azurite (the archive sink's az:// tests) is an npm package.
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# `sluice top` is tested in a real terminal (tests/it/top.rs).
command -v tmux >/dev/null 2>&1 || need_apt+=(tmux)
# `systemd-analyze verify` checks deploy/systemd/sluice.service (tests/it/service.rs).
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! python3 -c 'import confluent_kafka, fluent, prometheus_client' >/dev/null 2>&1; then
  echo "install-deps: pip install confluent-kafka fluent-logger prometheus-client"
  python3 -m pip install -q --disable-pip-version-check 'confluent-kafka==2.16.1' 'fluent-logger==0.11.1' \
    'prometheus-client==0.26.0'
fi

# cargo-deb builds the Debian package (scripts/build-deb.sh, tests/it/deb.rs). Pinned:
# the test packages the dev-profile binary, which later versions refuse.
if ! cargo deb --version 2>/dev/null | grep -q '3.8.0'; then
  echo "install-deps: cargo install cargo-deb@3.8.0"
  cargo install --locked --quiet cargo-deb@3.8.0
fi
# The archive sink's S3 tests: moto's S3 server (multipart uploads) and boto3.
if ! python3 -c 'import moto.server, boto3, flask' >/dev/null 2>&1; then
  echo "install-deps: pip install moto[server] boto3"
  python3 -m pip install -q --disable-pip-version-check 'moto[server]==5.1.18' 'boto3==1.43.11'
fi

# The archive sink's Azure tests: Azurite, Microsoft's Azure Storage emulator, from
# npm, in $SLUICE_AZURITE_HOME (default /var/tmp/sluice-azurite, outside the clone,
# reused across clones like the Kafka install), and azure-storage-blob to read back.
azurite_home="${SLUICE_AZURITE_HOME:-/var/tmp/sluice-azurite}"
if [ ! -x "$azurite_home/node_modules/.bin/azurite-blob" ]; then
  echo "install-deps: npm install azurite@3.37.0 into $azurite_home"
  mkdir -p "$azurite_home"
  npm install --silent --no-audit --no-fund --prefix "$azurite_home" azurite@3.37.0 >/dev/null
  [ -x "$azurite_home/node_modules/.bin/azurite-blob" ] || { echo "install-deps: azurite missing after npm install" >&2; exit 1; }
fi
if ! python3 -c 'import azure.storage.blob' >/dev/null 2>&1; then
  echo "install-deps: pip install azure-storage-blob"
  python3 -m pip install -q --disable-pip-version-check 'azure-storage-blob==12.31.1'
fi

bash "$(dirname "$0")/install-kafka.sh" >/dev/null
echo "install-deps: ok"
