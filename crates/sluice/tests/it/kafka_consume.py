#!/usr/bin/env python3
"""Independent Kafka reader for sluice's integration tests (confluent-kafka).

Reads every partition of the given topics from the beginning, without a consumer
group, and writes one line per record to --out:

    topic <TAB> partition <TAB> offset <TAB> key-base64 or "-" <TAB> value-base64

It counts records by reading them (not by high watermarks), and
stops when --expect records were read and nothing more arrived for --settle
seconds, or when nothing arrived for --idle seconds. Exit 0 always; the caller
compares. Usage:
    kafka_consume.py --brokers H:P --topic T [--topic T2] --out FILE
                     [--expect N] [--idle 5] [--settle 1] [--set KEY=VALUE ...]

--set passes a librdkafka property to both clients (TLS settings, for instance).
"""

import argparse
import base64
import sys
import time

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", action="append", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--idle", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    extra = dict(kv.split("=", 1) for kv in args.set)

    admin = AdminClient({"bootstrap.servers": args.brokers, **extra})
    parts = []
    for topic in args.topic:
        md = admin.list_topics(topic=topic, timeout=10)
        t = md.topics.get(topic)
        if t is None or t.error is not None:
            print(f"topic {topic}: {t.error if t else 'missing'}", file=sys.stderr)
            continue
        parts += [TopicPartition(topic, p, -2) for p in sorted(t.partitions)]  # -2: beginning

    c = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "sluice-it-reader",
        "enable.auto.commit": False,
        "enable.partition.eof": False,
        "fetch.wait.max.ms": 50,
        **extra,
    })
    c.assign(parts)
    n = 0
    last = time.monotonic()
    with open(args.out, "w") as out:
        while True:
            msgs = c.consume(num_messages=10000, timeout=0.2)
            now = time.monotonic()
            for m in msgs:
                if m.error():
                    if m.error().code() != KafkaError._PARTITION_EOF:
                        print(f"consume error: {m.error()}", file=sys.stderr)
                    continue
                key = m.key()
                k = "-" if key is None else base64.b64encode(key).decode()
                v = base64.b64encode(m.value() or b"").decode()
                out.write(f"{m.topic()}\t{m.partition()}\t{m.offset()}\t{k}\t{v}\n")
                n += 1
            if msgs:
                last = now
            quiet = now - last
            if args.expect and n >= args.expect and quiet >= args.settle:
                break
            if quiet >= args.idle:
                break
    c.close()
    print(n)


if __name__ == "__main__":
    main()
