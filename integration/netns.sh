#!/usr/bin/env bash
# The benchmark's shaped link and its extra sshds (used by integration/bench.py).
#
#   bash integration/netns.sh up      # namespace + veth + tbf, sshds, ssh config
#   bash integration/netns.sh check   # time 50 MB through the shaped link
#   bash integration/netns.sh down    # remove all of it (idempotent)
#
# `up` creates network namespace $NS joined to this one by a veth pair that only
# carries a private /30 ($HOST_IP <-> $NS_IP; nothing else is ever addressed),
# shapes both directions with tbf at $RATE, and starts, inside the namespace, a
# copy of the rig's sshd (same host keys, users and authorized keys) listening on
# $NS_IP:$RIG_PORT and $NS_IP:$EXTRA_PORT. On $EXTRA_PORT the user rig-d26 gets
# DOCKER_HOST of the bench's own engine ($EXTRA_SOCK, started by bench.py) instead
# of the rig's d26, so fan-out has a third target. A second copy listens on
# 127.0.0.1:$EXTRA_PORT in this namespace for the same on loopback. Engines are
# unix sockets on the shared filesystem, so `docker` inside the namespace reaches
# them. `up` writes $BENCH/ssh/config with the aliases
#   slow-d20 slow-d26 slow-d26c slow-d26x   (through the shaped link)
#   rig-d20 rig-d26 rig-d26c lo-d26x        (loopback)
# and, when integration/nodes.sh is up, a copy of containerd node c21's sshd in the
# namespace on $NS_IP:<its port> with the alias
#   slow-c21                                (through the shaped link; user rig-node)
# and a known_hosts with the rig's (and the nodes') host keys for every address:port used.
# `up` always starts with `down`, so a run killed with SIGKILL is cleaned next time.
set -euo pipefail

RIG=${SHIPIT_RIG_DIR:-/var/tmp/shipit-rig}
BENCH=${SHIPIT_BENCH_DIR:-/var/tmp/shipit-bench}
NS=${SHIPIT_BENCH_NETNS:-shipit-bench}
VETH_HOST=${SHIPIT_BENCH_VETH:-shipit-b0}
VETH_NS=${VETH_HOST%0}1
HOST_IP=10.200.0.1
NS_IP=10.200.0.2
RATE=${SHIPIT_BENCH_RATE:-100mbit}
RIG_PORT=$(sed -n 's/^ListenAddress .*:\([0-9]*\)$/\1/p' "$RIG/ssh/sshd_config" | head -n1)
RIG_PORT=${RIG_PORT:-2222}
EXTRA_PORT=${SHIPIT_BENCH_SSH_PORT:-2292}
EXTRA_SOCK=${SHIPIT_BENCH_EXTRA_SOCK:-unix://$BENCH/d26x/docker.sock}
SSH=$BENCH/ssh
NODES_SSH=$RIG/nodes/ssh
NODE_PORT=$(sed -n 's/^ListenAddress .*:\([0-9]*\)$/\1/p' "$NODES_SSH/sshd_config-c21" 2>/dev/null | head -n1)

ME=netns
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIE_TAG=""

cmd_down() {
  stop_pid "$SSH/sshd-lo.pid" "$SSH/sshd-lo_config" 5
  stop_pid "$SSH/sshd-slow.pid" "$SSH/sshd-slow_config" 5
  stop_pid "$SSH/sshd-node.pid" "$SSH/sshd-node_config" 5
  if ip netns list | grep -qw "^$NS"; then
    # Whatever still runs in the namespace was started by our sshd (sessions, docker CLIs).
    local pids
    pids=$(ip netns pids "$NS" 2>/dev/null || true)
    if [[ -n $pids ]]; then
      # shellcheck disable=SC2086
      kill -TERM $pids 2>/dev/null || true
      sleep 0.5
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
    fi
    ip netns del "$NS" # takes the veth pair with it, a moment later
  fi
  # The kernel drops the pair after the namespace, on its own time: a link seen here may be
  # gone by the time it is deleted. Wait until it is gone, or the next up cannot make it.
  local i
  for ((i = 0; i < 50; i++)); do
    ip link show "$VETH_HOST" >/dev/null 2>&1 || break
    ip link del "$VETH_HOST" 2>/dev/null || true
    sleep 0.1
  done
  ! ip link show "$VETH_HOST" >/dev/null 2>&1 || die "$VETH_HOST is still there after 5 s"
  rm -rf "$SSH"
}

# sshd config: the rig's global section with our ListenAddress and PidFile, our
# Match for the extra engine first (sshd keeps the first SetEnv that applies), then
# the rig's Match blocks.
write_sshd_config() {
  local name=$1 listen=$2
  {
    echo "# sshd for the shipit benchmark ($name; written by integration/netns.sh from $RIG/ssh/sshd_config)"
    sed -n '/^Match /q; /^ListenAddress /d; /^PidFile /d; /^#/d; p' "$RIG/ssh/sshd_config"
    for a in $listen; do echo "ListenAddress $a"; done
    echo "PidFile $SSH/sshd-$name.pid"
    echo
    echo "Match User rig-d26 LocalPort $EXTRA_PORT"
    echo "  SetEnv DOCKER_HOST=$EXTRA_SOCK PATH=/usr/bin:/bin:/usr/sbin:/sbin"
    echo
    sed -n '/^Match /,$p' "$RIG/ssh/sshd_config"
  } >"$SSH/sshd-${name}_config"
}

start_sshd() {
  local name=$1 ns=$2 i
  local run=(/usr/sbin/sshd -f "$SSH/sshd-${name}_config" -E "$SSH/sshd-$name.log")
  /usr/sbin/sshd -t -f "$SSH/sshd-${name}_config" || die "sshd-$name: bad config"
  if [[ -n $ns ]]; then
    ip netns exec "$ns" "${run[@]}"
  else
    "${run[@]}"
  fi
  for ((i = 0; i < 50; i++)); do
    [[ -s $SSH/sshd-$name.pid ]] && return 0
    sleep 0.1
  done
  die "sshd-$name did not start: $(tail -n 5 "$SSH/sshd-$name.log")"
}

# The node's sshd as it is, on the namespace's address instead of loopback.
write_node_sshd_config() {
  {
    echo "# sshd for the shipit benchmark (node c21; written by integration/netns.sh)"
    sed '/^ListenAddress /d; /^PidFile /d; /^#/d' "$NODES_SSH/sshd_config-c21"
  } | awk -v listen="ListenAddress $NS_IP:$NODE_PORT" -v pid="PidFile $SSH/sshd-node.pid" \
    '!done && /^Match / { print listen; print pid; print ""; done = 1 } { print }
     END { if (!done) { print listen; print pid } }' >"$SSH/sshd-node_config"
}

host_block() {
  ssh_host_block "$1" "$2" "$3" "$4" "${5:-$RIG/ssh/id_ed25519}" "$SSH/known_hosts"
}

cmd_up() {
  [[ $EUID -eq 0 ]] || die "must run as root"
  [[ -f $RIG/ssh/sshd_config ]] || die "no rig at $RIG (make rig-up)"
  command -v tc >/dev/null || die "tc (iproute2) is missing"
  cmd_down
  mkdir -p "$SSH"
  chmod 755 "$BENCH"

  log "namespace $NS: $VETH_HOST $HOST_IP/30 <-> $VETH_NS $NS_IP/30, tbf $RATE each way"
  ip netns add "$NS"
  ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NS"
  ip addr add "$HOST_IP/30" dev "$VETH_HOST"
  ip link set "$VETH_HOST" up
  ip -n "$NS" addr add "$NS_IP/30" dev "$VETH_NS"
  ip -n "$NS" link set "$VETH_NS" up
  ip -n "$NS" link set lo up
  # burst covers one 64 KiB GSO packet; latency bounds the queue (~1 MB at 100 Mbit).
  tc qdisc add dev "$VETH_HOST" root tbf rate "$RATE" burst 128kb latency 80ms
  ip netns exec "$NS" tc qdisc add dev "$VETH_NS" root tbf rate "$RATE" burst 128kb latency 80ms

  write_sshd_config slow "$NS_IP:$RIG_PORT $NS_IP:$EXTRA_PORT"
  write_sshd_config lo "127.0.0.1:$EXTRA_PORT"
  start_sshd slow "$NS"
  start_sshd lo ""

  local keys k
  keys=$(cat "$RIG"/ssh/ssh_host_*_key.pub | awk '{print $1, $2}')
  : >"$SSH/known_hosts"
  for k in "[$NS_IP]:$RIG_PORT" "[$NS_IP]:$EXTRA_PORT" "[127.0.0.1]:$EXTRA_PORT"; do
    sed "s|^|$k |" <<<"$keys" >>"$SSH/known_hosts"
  done
  grep -h "^\[127.0.0.1\]:$RIG_PORT " "$RIG/ssh/known_hosts" >>"$SSH/known_hosts"
  local node=0
  if [[ -n $NODE_PORT && -f $NODES_SSH/sshd-c21.pid ]]; then
    write_node_sshd_config
    start_sshd node "$NS"
    cat "$NODES_SSH"/ssh_host_*_key.pub | awk -v k="[$NS_IP]:$NODE_PORT" '{print k, $1, $2}' \
      >>"$SSH/known_hosts"
    node=1
  fi
  {
    echo "# ssh config for the shipit benchmark (written by integration/netns.sh)"
    for e in d20 d26 d26c; do
      host_block "slow-$e" "$NS_IP" "$RIG_PORT" "rig-$e"
      host_block "rig-$e" 127.0.0.1 "$RIG_PORT" "rig-$e"
    done
    host_block slow-d26x "$NS_IP" "$EXTRA_PORT" rig-d26
    host_block lo-d26x 127.0.0.1 "$EXTRA_PORT" rig-d26
    if [[ $node == 1 ]]; then
      host_block slow-c21 "$NS_IP" "$NODE_PORT" rig-node "$NODES_SSH/id_ed25519"
    fi
  } >"$SSH/config"
  log "up: ssh -F $SSH/config slow-d26c docker version"
}

# 50 MiB through the shaped link; prints the seconds (≈ 4.2 s at 100 Mbit/s).
cmd_check() {
  local t0=$EPOCHREALTIME
  dd if=/dev/zero bs=1M count=50 status=none | ssh -F "$SSH/config" slow-d26c 'cat >/dev/null'
  awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f\n", b - a }'
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
check) cmd_check ;;
*)
  echo "usage: $0 up|down|check" >&2
  exit 2
  ;;
esac
