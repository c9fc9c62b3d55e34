"""Send records to a forward server with the real fluent-logger client.

Usage: forward_fluent_logger.py PORT
Exit 1 if any emit fails. Records (all tag prefix "py"):
  py.int   integer time 1700000000,            {"message": "int time", "n": 1}
  py.nano  EventTime 1700000000.5 (ns precision), {"message": "nano time", "n": 2, "nested": {"ok": True}}
  py.float float time 1700000001.25 without ns precision (float64 on the wire)
  py.many  100 records, {"message": "many i", "i": i}, one connection
"""
import sys

from fluent import sender

port = int(sys.argv[1])
failures = []


def check(s, ok):
    if not ok:
        failures.append(repr(s.last_error))
        s.clear_last_error()


plain = sender.FluentSender("py", host="127.0.0.1", port=port)
check(plain, plain.emit_with_time("int", 1700000000, {"message": "int time", "n": 1}))
check(plain, plain.emit_with_time("float", 1700000001.25, {"message": "float time", "n": 3}))
for i in range(100):
    check(plain, plain.emit_with_time("many", 1700000002, {"message": "many %d" % i, "i": i}))
plain.close()

nano = sender.FluentSender("py", host="127.0.0.1", port=port, nanosecond_precision=True)
check(nano, nano.emit_with_time("nano", 1700000000.5, {"message": "nano time", "n": 2, "nested": {"ok": True}}))
nano.close()

if failures:
    print("emit failed:", failures, file=sys.stderr)
    sys.exit(1)
