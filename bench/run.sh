#!/usr/bin/env bash
# Benchmark lockd beside the trivial tiny_http responder, the legacy daemon
# and Redis, in one run on this machine and disk. The legacy daemon is the
# real gocept.lockd 0.1 under Python 2.7 when one runs here (fetched with
# pip download into bench/out/legacy), else the stand-in bench/legacy.py.
#
#   bench/run.sh            full run (about 12 minutes with the defaults)
#   QUICK=1 bench/run.sh    smoke run (about 2 minutes, one repetition)
#   bench/run.sh --report-only   rewrite results.md and the plot from
#                                bench/out/results.json (no measuring)
#
# Settings (environment): WARMUP (s, 1), DURATION (s, 5), REPS (3),
# CLIENTS ("1 8 64"), THREADS (lockd/lockd-null workers, 2), STAGGER_MS (2,
# gap between client connects), HELD (100000), IDLE_CONNS (1000),
# PROFILE (1: perf profile and syscall counts of lockd at 64 clients),
# BENCH_DIR (scratch directories, default bench/out/work; must be on the disk
# lockd would use, not tmpfs), LEGACY (auto, gocept or standin).
# Results: bench/out/ (raw JSON and logs), bench/results.md and
# bench/throughput.svg (committed).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v redis-server >/dev/null; then
  echo "installing redis-server" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  # The package may start a system instance; the benchmark starts its own.
  if command -v systemctl >/dev/null; then systemctl stop redis-server 2>/dev/null || true; fi
fi
if [ "${PROFILE:-1}" = 1 ] && ! command -v perf >/dev/null; then
  echo "installing linux-perf for the profile (PROFILE=0 skips it)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null || true
fi

cargo build --release --workspace --bins
exec python3 bench/driver.py "$@"
