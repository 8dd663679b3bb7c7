#!/usr/bin/env bash
# A GlusterFS volume with several FUSE mounts on one machine, without the
# network: glusterd and its brick run in a network namespace that has only
# `lo`, bound to 127.0.0.2 (the gluster CLI refuses 127.0.0.1 and localhost
# for bricks); the mounts are made from inside that namespace (nsenter
# --net, so the FUSE client reaches 127.0.0.2) but in the caller's mount
# namespace, where lockd and the tests see them.
#
#   tests/cluster/gluster.sh up DIR [MOUNTS [LAYOUT]]
#       volume "lockd", mounts DIR/m1..mN (2); LAYOUT is `single` (one brick,
#       DIR/brick, the default) or `arbiter` (replica 3 arbiter 1: bricks
#       DIR/b1, DIR/b2 and the arbiter DIR/b3, each its own glusterfsd)
#   tests/cluster/gluster.sh down DIR          unmount, stop, remove everything
#
# DIR is a fresh (or absent) directory of the caller's; `up` writes there the
# brick, glusterd's state, its logs and `state` (the namespace's name), and
# `down` undoes whatever `up` got to, so it is safe after a failed `up` and
# safe to call twice. Needs root, /dev/fuse, ip netns and glusterfs-server
# and glusterfs-client. The mounts use the coherent settings of
# docs/cluster.md: no kernel entry, attribute or negative caching, and the
# volume's stat-prefetch, quick-read and open-behind off.
set -euo pipefail

die() { echo "gluster.sh: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 up DIR [MOUNTS] | down DIR"
action=$1
dir=$(realpath -m "$2")
mounts=${3:-2}
layout=${4:-single}
addr=127.0.0.2
volume=lockd
# One namespace per DIR: concurrent runs on other DIRs do not collide on it.
ns=lockd-gl-$(printf '%s' "$dir" | md5sum | cut -c1-10)
sock=$dir/glusterd.socket

cli() { ip netns exec "$ns" gluster --mode=script --glusterd-sock="$sock" \
  --log-file="$dir/log/cli.log" "$@"; }

up() {
  for tool in glusterd gluster mount.glusterfs ip nsenter; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install glusterfs-server glusterfs-client iproute2)"
  done
  [ "$(id -u)" = 0 ] || die "needs root"
  [ -c /dev/fuse ] || die "/dev/fuse is missing"
  mkdir -p "$dir"
  [ ! -e "$dir/state" ] || die "$dir is in use: run '$0 down $dir' first"
  echo "ns=$ns" > "$dir/state"
  mkdir -p "$dir/glusterd" "$dir/log"
  # Fresh bricks each run: a brick that held a volume refuses a new one.
  case $layout in
    single) bricks=("$dir/brick") ;;
    arbiter) bricks=("$dir/b1" "$dir/b2" "$dir/b3") ;;
    *) die "unknown layout $layout: single or arbiter" ;;
  esac
  for b in "${bricks[@]}"; do rm -rf "$b"; mkdir "$b"; done
  ip netns add "$ns" || die "cannot create the network namespace $ns"
  ip netns exec "$ns" ip link set lo up
  cat > "$dir/glusterd.vol" <<VOL
volume management
    type mgmt/glusterd
    option working-directory $dir/glusterd
    option transport-type socket
    option transport.socket.bind-address $addr
    option transport.socket.listen-port 24007
    option glusterd-sockfile $sock
    option ping-timeout 0
    option event-threads 1
end-volume
VOL
  ip netns exec "$ns" glusterd -f "$dir/glusterd.vol" -p "$dir/glusterd.pid" \
    -l "$dir/log/glusterd.log"
  for _ in $(seq 50); do
    [ -S "$sock" ] && cli volume list >/dev/null 2>&1 && break
    sleep 0.1
  done
  # force: the bricks are on the root filesystem (and, for a replica, on
  # one server).
  if [ "$layout" = arbiter ]; then
    cli volume create "$volume" replica 3 arbiter 1 \
      "${bricks[@]/#/$addr:}" force >/dev/null
  else
    cli volume create "$volume" "$addr:${bricks[0]}" force >/dev/null
  fi
  # Each of these serves one mount a name or content another mount has
  # changed (docs/cluster.md, "Mount and volume options").
  for option in performance.stat-prefetch performance.quick-read performance.open-behind; do
    cli volume set "$volume" "$option" off >/dev/null
  done
  cli volume start "$volume" >/dev/null
  for i in $(seq "$mounts"); do
    mkdir -p "$dir/m$i"
    nsenter --net="/run/netns/$ns" mount -t glusterfs \
      -o attribute-timeout=0,entry-timeout=0,negative-timeout=0,log-file="$dir/log/m$i.log" \
      "$addr:/$volume" "$dir/m$i"
  done
}

down() {
  local status=0
  # By the mount table, not mountpoint(1): a mount whose client died
  # cannot be stat'ed ("Transport endpoint is not connected").
  for m in "$dir"/m*; do
    if awk -v m="$m" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts; then
      umount "$m" 2>/dev/null || umount -l "$m" || status=1
    fi
  done
  if [ -e "$dir/state" ] && ip netns list | grep -qw "$ns"; then
    cli volume stop "$volume" >/dev/null 2>&1 || true
  fi
  # glusterd, its brick process and any client left: everything in the
  # namespace, then glusterd by its pid file (it may have been moved out).
  if ip netns list | grep -qw "$ns"; then
    for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns" || status=1
  fi
  if [ -s "$dir/glusterd.pid" ]; then
    kill -9 "$(cat "$dir/glusterd.pid")" 2>/dev/null || true
  fi
  # glusterd writes the brick's log outside DIR, named after the brick's path.
  for b in brick b1 b2 b3; do
    rm -f "/var/log/glusterfs/bricks/$(printf '%s' "${dir#/}/$b" | tr / -).log"
  done
  rm -f "$dir/state"
  return $status
}

case $action in
  up) up ;;
  down) down ;;
  *) die "usage: $0 up DIR [MOUNTS] | down DIR" ;;
esac
