#!/usr/bin/env python3
"""Raw fdatasync latency of the device holding DIR: append SIZE bytes to a file
in DIR and fdatasync it, COUNT times (after a few warm-up rounds); print
`fsync_p50_ms=… fsync_p99_ms=…` (what one group commit of the disk buffer costs
at best). Usage: fsync_probe.py DIR [COUNT] [SIZE]"""
import os
import sys
import tempfile
import time

def main():
    d = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 10_000
    os.makedirs(d, exist_ok=True)
    block = b"x" * size
    fd, path = tempfile.mkstemp(prefix="fsync-probe-", dir=d)
    try:
        lat = []
        for i in range(count + 20):
            os.write(fd, block)
            t = time.perf_counter()
            os.fdatasync(fd)
            if i >= 20:
                lat.append(time.perf_counter() - t)
        lat.sort()
        pct = lambda p: lat[int((len(lat) - 1) * p)] * 1000
        print(f"fsync_count={count} fsync_bytes={size} fsync_p50_ms={pct(0.5):.3f} fsync_p99_ms={pct(0.99):.3f}")
    finally:
        os.close(fd)
        os.unlink(path)

main()
