#!/usr/bin/env python3
"""How long a small write and an fdatasync take on this machine's disk, by how the file was made.

    python3 benches/tools/fsync_probe.py [DIR]

Writes 2,000 records of 512 bytes into a file in DIR (default: target/), each followed by
fdatasync, for four kinds of file, twice over, and prints the median and the 99th percentile:

- append: a file that grows with every write (the write floor's log before 2026-12-07);
- setlen: a file sized ahead with ftruncate, as fjall creates its journal files (the registry's
  log, and the write floor's since);
- falloc: a file sized ahead with posix_fallocate;
- written: a file written through once, and synced, before the timed writes.

On ext4 an fdatasync after a write that grows the file must also carry the new size to the
disk, which is why `append` costs more. Figures: docs/performance.md, "The registry".
"""
import os
import sys
import time

RECORDS = 2000
SIZE = 512


def run(directory, kind):
    path = os.path.join(directory, "fsync_probe.tmp")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
    try:
        total = RECORDS * SIZE + 4096
        if kind == "setlen":
            os.ftruncate(fd, 64 << 20)
            os.fsync(fd)
        elif kind == "falloc":
            os.posix_fallocate(fd, 0, 64 << 20)
            os.fsync(fd)
        elif kind == "written":
            os.write(fd, b"\0" * total)
            os.fsync(fd)
            os.lseek(fd, 0, os.SEEK_SET)
        record = b"x" * SIZE
        took = []
        for _ in range(RECORDS):
            start = time.perf_counter()
            os.write(fd, record)
            os.fdatasync(fd)
            took.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    took.sort()
    return took[len(took) // 2] * 1e6, took[int(len(took) * 0.99)] * 1e6


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else "target"
    os.makedirs(directory, exist_ok=True)
    for _ in range(2):
        for kind in ["append", "setlen", "falloc", "written"]:
            p50, p99 = run(directory, kind)
            print(f"{kind:<8} p50 {p50:4.0f} µs   p99 {p99:4.0f} µs")


if __name__ == "__main__":
    main()
