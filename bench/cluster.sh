#!/usr/bin/env bash
# What a GlusterFS volume costs lockd, measured in one run on this machine
# (docs/cluster.md, "Figures"):
#
#  1. the raw durable lock-file rate of the volume (bench/rawlock.py: create,
#     write, fsync, link, directory fsync, then unlink and directory fsync),
#     1, 8 and 64 threads from one mount, and 2, 8 and 64 split over two;
#  2. lockd: 1 client on one lockd, and 64 clients over two lockd on two
#     mounts of one lock directory (two lockd-bench of 32 clients each,
#     `--first` keeping their resources apart), distinct resources;
#  3. beside it, if etcd is installed (Debian: etcd-server), a 3-member etcd
#     on loopback with 1 and 64 clients (bench/etcdload.py: put-if-absent
#     and delete through its JSON gateway).
#
#   bench/cluster.sh            (about 2 minutes; needs root and FUSE, as the
#                                cluster tests do)
#   DURATION=10 bench/cluster.sh
#
# Settings (environment): DURATION (s per figure, 5), WARMUP (s, 1), THREADS
# (lockd's worker threads, 2), WORK (scratch directory on the disk, default
# /var/tmp), BASELINE (another lockd binary, e.g. a build of an older commit:
# measured in the same run beside this one, on a lock directory of its own
# on the same volume, in the order this, baseline, baseline, this, so that
# a load that changes during the run hits both alike). Everything runs in
# the volume's network namespace (only lo).
# Output: a Markdown table on stdout; raw JSON lines in bench/out/cluster/.
set -euo pipefail
cd "$(dirname "$0")/.."

duration=${DURATION:-5}
warmup=${WARMUP:-1}
threads=${THREADS:-2}
out=bench/out/cluster
mkdir -p "$out"
: > "$out/results.jsonl"

cargo build --quiet --release --bins
work=$(mktemp -d "${WORK:-/var/tmp}/lockd-cluster-bench.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  tests/cluster/gluster.sh down "$work/gl" || true
  rm -rf "$work"
}
trap cleanup EXIT

tests/cluster/gluster.sh up "$work/gl" 2
ns=$(sed -n 's/^ns=//p' "$work/gl/state")
inns() { nsenter --net="/run/netns/$ns" "$@"; }
m1=$work/gl/m1
m2=$work/gl/m2
echo "Load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
echo
echo "| what | clients | cycles/s |"
echo "|---|---:|---:|"
row() { echo "| $1 | $2 | $3 |"; }
rate() { python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read().strip().splitlines()[-1])["cycles_per_s"]))'; }

# 1. The filesystem alone.
for t in 1 8 64; do
  r=$(python3 bench/rawlock.py --threads "$t" --seconds "$duration" --warmup "$warmup" \
    --label "raw one mount" "$m1/raw" | tee -a "$out/results.jsonl" | rate)
  row "raw durable lock files, one mount" "$t" "$r"
  # Split over two mounts: at least one thread on each.
  t2=$(( t < 2 ? 2 : t ))
  r=$(python3 bench/rawlock.py --threads "$t2" --seconds "$duration" --warmup "$warmup" \
    --label "raw two mounts" "$m1/raw" "$m2/raw" | tee -a "$out/results.jsonl" | rate)
  row "raw durable lock files, two mounts" "$t2" "$r"
done

# 2. lockd, one per mount, on one lock directory.
baseline=${BASELINE:-}
start_lockd() { # binary mount dir port
  inns "$1" --cluster-fs --dir "$2/$3" --listen "127.0.0.1:$4" \
    --threads "$threads" --log-level warn 2> "$work/lockd-$4.log" &
  pids+=($!)
  for _ in $(seq 100); do
    inns curl -sf "http://127.0.0.1:$4/health" >/dev/null 2>&1 && return
    sleep 0.1
  done
  cat "$work/lockd-$4.log" >&2
  exit 1
}
start_lockd target/release/lockd "$m1" locks 7391
start_lockd target/release/lockd "$m2" locks 7392
if [ -n "$baseline" ]; then
  start_lockd "$baseline" "$m1" locks-baseline 7393
  start_lockd "$baseline" "$m2" locks-baseline 7394
fi
bench() { # port clients first label
  inns target/release/lockd-bench --addr "127.0.0.1:$1" --clients "$2" --first "$3" \
    --warmup "$warmup" --duration "$duration" --stagger-ms 2 --label "$4" \
    | grep '^RESULT ' | sed 's/^RESULT //' | tee -a "$out/results.jsonl" | rate
}
one() { # port label
  row "lockd$2, one lockd" 1 "$(bench "$1" 1 0 "lockd$2 1 client")"
}
two() { # port-of-the-first label
  local a b
  a=$(mktemp -p "$work"); b=$(mktemp -p "$work")
  bench "$1" 32 0 "lockd$2 32 of 64 clients, mount 1" > "$a" &
  bench "$(( $1 + 1 ))" 32 32 "lockd$2 32 of 64 clients, mount 2" > "$b"
  wait $!
  row "lockd$2, two lockd on two mounts (32 + 32 clients: first + second)" 64 \
    "$(( $(cat "$a") + $(cat "$b") )) ($(cat "$a") + $(cat "$b"))"
}
one 7391 ""
[ -z "$baseline" ] || one 7393 " (baseline)"
two 7391 ""
[ -z "$baseline" ] || two 7393 " (baseline)"
[ -z "$baseline" ] || two 7393 " (baseline)"
two 7391 ""
[ -z "$baseline" ] || one 7393 " (baseline)"
one 7391 ""

# 3. etcd, three members on loopback, beside it.
if command -v etcd >/dev/null; then
  cluster=e1=http://127.0.0.1:2380,e2=http://127.0.0.1:12380,e3=http://127.0.0.1:22380
  endpoints=()
  for m in 1 2 3; do
    client=$(( (m - 1) * 10000 + 2379 )); peer=$(( client + 1 ))
    inns etcd --name "e$m" --data-dir "$work/etcd$m" \
      --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
      --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
      --initial-cluster "$cluster" --initial-cluster-token lockd-bench --initial-cluster-state new \
      2> "$work/etcd$m.log" &
    pids+=($!)
    endpoints+=("http://127.0.0.1:$client")
  done
  for _ in $(seq 100); do
    inns curl -sf http://127.0.0.1:2379/health 2>/dev/null | grep -q '"true"' && break
    sleep 0.2
  done
  for c in 1 64; do
    r=$(inns python3 bench/etcdload.py --clients "$c" --seconds "$duration" --warmup "$warmup" \
      "${endpoints[@]}" | tee -a "$out/results.jsonl" | rate)
    row "etcd 3.4, 3 members on loopback" "$c" "$r"
  done
else
  echo "etcd is not installed (apt-get install etcd-server): no etcd figures" >&2
fi
echo
echo "Load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
