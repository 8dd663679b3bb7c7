#!/usr/bin/env python3
"""lock+unlock cycles on etcd through its JSON gateway, for bench/cluster.sh:
the same work as lockd-bench's `distinct` mode, done the way a lock on etcd
is usually done without leases.

One cycle of client i: a transaction that puts key `bench-<i>` = `client-<i>`
only if the key does not exist (compare create_revision == 0; the
transaction must succeed), then a delete of the key. Each client keeps one
HTTP/1.1 connection to member i mod the number of endpoints. etcd commits
each write to a majority of members, each fsyncing its log, before it
answers.

  bench/etcdload.py --clients 64 --seconds 5 http://127.0.0.1:2379 ...

Prints one line of JSON.
"""

import argparse
import base64
import http.client
import json
import threading
import time
import urllib.parse


def b64(text):
    return base64.b64encode(text.encode()).decode()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("endpoints", nargs="+")
    args = parser.parse_args()

    start = time.monotonic() + 0.5
    window = (start + args.warmup, start + args.warmup + args.seconds)
    counts = [0] * args.clients
    errors = []

    def worker(i):
        url = urllib.parse.urlsplit(args.endpoints[i % len(args.endpoints)])
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
        key = b64(f"bench-{i}")
        txn = json.dumps({
            "compare": [{"key": key, "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": key, "value": b64(f"client-{i}")}}],
        })
        delete = json.dumps({"key": key})

        def post(path, body):
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status}: {data[:200]!r}")
            return json.loads(data)

        try:
            while time.monotonic() < start:
                time.sleep(0.001)
            while time.monotonic() < window[1]:
                if not post("/v3/kv/txn", txn).get("succeeded"):
                    raise RuntimeError(f"bench-{i} was not free")
                post("/v3/kv/deleterange", delete)
                if window[0] <= time.monotonic() < window[1]:
                    counts[i] += 1
        except Exception as error:  # noqa: BLE001 - reported, and the run fails
            errors.append(f"client {i}: {error}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = sum(counts)
    print(json.dumps({
        "clients": args.clients,
        "endpoints": len(args.endpoints),
        "seconds": args.seconds,
        "cycles": total,
        "cycles_per_s": round(total / args.seconds, 1),
        "errors": errors,
    }))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
