#!/usr/bin/env python3
"""The durable lock-file work of one lock and unlock, done straight on the
filesystem without lockd: the rate the filesystem itself allows (issue 12).

One cycle, by each thread on its own resource name:
  create a content file, write the client, fsync it, link it to
  <name>.resource.lock, fsync the directory (the lock is durable), then
  unlink the lock file and the content file and fsync the directory again
  (the release is durable).
No flock, no group commit: each thread fsyncs for itself.

  bench/rawlock.py --threads 8 --seconds 5 DIR [DIR...]

Thread i works in DIR number i mod the number of DIRs (two mounts of one
directory: the threads are split between them). Prints one line of JSON.
"""

import argparse
import json
import os
import threading
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--label", default="")
    parser.add_argument("dirs", nargs="+")
    args = parser.parse_args()
    for d in args.dirs:
        os.makedirs(d, exist_ok=True)

    start = time.monotonic() + 0.2
    window = (start + args.warmup, start + args.warmup + args.seconds)
    counts = [0] * args.threads
    errors = []

    def worker(i):
        directory = args.dirs[i % len(args.dirs)]
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        lock = os.path.join(directory, f"raw{i}.resource.lock")
        n = 0
        try:
            while time.monotonic() < start:
                time.sleep(0.001)
            while True:
                now = time.monotonic()
                if now >= window[1]:
                    break
                content = os.path.join(directory, f".raw-{os.getpid()}-{i}-{n}.tmp")
                n += 1
                fd = os.open(content, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                os.write(fd, f"client-{i}".encode())
                os.fsync(fd)
                os.close(fd)
                os.link(content, lock)
                os.fsync(dir_fd)
                os.unlink(lock)
                os.unlink(content)
                os.fsync(dir_fd)
                if window[0] <= time.monotonic() < window[1]:
                    counts[i] += 1
        except OSError as error:
            errors.append(f"thread {i}: {error}")
        finally:
            os.close(dir_fd)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(counts)
    print(json.dumps({
        "label": args.label,
        "threads": args.threads,
        "dirs": len(args.dirs),
        "seconds": args.seconds,
        "cycles": total,
        "cycles_per_s": round(total / args.seconds, 1),
        "errors": errors,
    }))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
