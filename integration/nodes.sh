#!/usr/bin/env bash
# shipit integration nodes: standalone containerd hosts without Docker, the way
# Kubernetes nodes run it, each reachable over its own sshd.
#
#   nodes.sh up       fetch what is missing, start everything, write
#                     $RIG/nodes/nodes.json. Idempotent; fast when up.
#   nodes.sh down [--purge]
#                     stop what nodes.sh started (by pidfile); --purge also
#                     deletes node data and keys (not the download cache).
#   nodes.sh status   one line per node; exit 0 iff all are up.
#
# Nodes (each with its own config, root, state, socket, log and sshd):
#   c17   containerd 1.7: Debian 13's. On Debian 12 unpacked from trixie with
#         dpkg -x; on Debian 13 the system's own package.
#   c21   containerd 2.1 (Debian unstable, unpacked), its socket at a k3s-style
#         path below its directory (run/k3s/containerd/containerd.sock)
# Both use the system's runc. The CRI plugin is off; the k8s.io namespace exists.
#
# SSH users (one set, each node's sshd gives them that node's ctr and socket):
#   rig-node        in group shipit-nodes, which owns the sockets: ctr works
#   rig-node-sudo   not in the group; sudoers lets it run the nodes' ctr with
#                   sudo -n
#   rig-node-none   neither: shipit must say it cannot open the socket
#   rig-node-k3s    (c21 only) has a `k3s` command whose `k3s ctr` knows the
#                   socket, as on a k3s node, and no CONTAINERD_ADDRESS
# None of them has docker on its PATH. Aliases in $RIG/nodes/ssh/config:
# node-c17, node-c17-sudo, node-c17-none, node-c21, node-c21-sudo,
# node-c21-none, node-k3s.
#
# sshd ports: $SHIPIT_NODES_SSH_PORT (default: the rig's port + 100) for c17,
# one more for c21, on 127.0.0.1.
set -euo pipefail
shopt -s inherit_errexit

export DEBIAN_FRONTEND=noninteractive
unset CONTAINERD_ADDRESS CONTAINERD_NAMESPACE

RIG=${SHIPIT_RIG_DIR:-/var/tmp/shipit-rig}
NODES=$RIG/nodes
CACHE=$RIG/cache
# rig.sh unpacks other suites' docker.io + containerd here; reused when present.
TRIXIE=$CACHE/trixie
SID=$CACHE/sid
NODE_TRIXIE=$CACHE/nodes-trixie # containerd alone, when $TRIXIE is not there
NODE_SID=$CACHE/nodes-sid       # the same for $SID
# Set by check_platform: the system's codename, and where c17's containerd 1.7
# comes from ("system" on Debian 13, whose own containerd is 1.7).
CODENAME=""
C17_SUITE=""
SSH_HOST=127.0.0.1
RIG_SSH_PORT=${SHIPIT_RIG_SSH_PORT:-2222}
BASE_PORT=${SHIPIT_NODES_SSH_PORT:-$((RIG_SSH_PORT + 100))}
SSH=$NODES/ssh
GROUP=shipit-nodes
USERS=(rig-node rig-node-sudo rig-node-none rig-node-k3s)
NODE_NAMES=(c17 c21)
BASE_PATH=/usr/sbin:/usr/bin:/sbin:/bin
SUDOERS=/etc/sudoers.d/shipit-nodes
AUTH_KEYS=.ssh/authorized_keys.shipit-nodes-$BASE_PORT

ME=nodes
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

check_platform() {
  if [[ $EUID -ne 0 ]]; then
    echo "nodes: must run as root (it creates users, starts containerd and sshd)" >&2
    exit 3
  fi
  local id="" version_id=""
  if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    version_id=$(. /etc/os-release && echo "${VERSION_ID:-}")
  fi
  case $id/$version_id in
  debian/12) CODENAME=bookworm C17_SUITE=trixie ;;
  debian/13) CODENAME=trixie C17_SUITE=system ;;
  *)
    echo "nodes: needs Debian 12 (bookworm) or 13 (trixie); this is ${id:-unknown} ${version_id:-?}" >&2
    exit 3
    ;;
  esac
}

# $1 if rig.sh (or an earlier run) unpacked a containerd there, else nothing.
unpacked() { if [[ -f $1/.complete && -x $1/usr/bin/containerd ]]; then echo "$1"; fi; }

node_dir() { echo "$NODES/$1"; }
node_prefix() {
  case $1 in
  c17)
    if [[ $C17_SUITE == system ]]; then
      echo "" # /usr/bin/containerd
    else
      local p
      p=$(unpacked "$TRIXIE")
      echo "${p:-$NODE_TRIXIE}"
    fi
    ;;
  c21)
    local p
    p=$(unpacked "$SID")
    echo "${p:-$NODE_SID}"
    ;;
  esac
}
node_sock() {
  case $1 in
  c17) echo "$NODES/c17/containerd.sock" ;;
  c21) echo "$NODES/c21/run/k3s/containerd/containerd.sock" ;;
  esac
}
node_port() {
  case $1 in
  c17) echo "$BASE_PORT" ;;
  c21) echo "$((BASE_PORT + 1))" ;;
  esac
}
node_ctr() { echo "$(node_prefix "$1")/usr/bin/ctr"; }

# ---------------------------------------------------------------- packages

APT=(apt-get -o DPkg::Lock::Timeout=600)

ensure_packages() {
  local pkgs=(runc openssh-server openssh-client sudo util-linux passwd debian-archive-keyring)
  [[ $C17_SUITE == system ]] && pkgs+=(containerd)
  local missing=() p installed
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null |
    awk '$2 == "install" && $3 == "ok" && $4 == "installed" { print $1 }') || true
  for p in "${pkgs[@]}"; do
    [[ $'\n'$installed$'\n' == *$'\n'$p$'\n'* ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  log "installing ${missing[*]}"
  "${APT[@]}" update -qq || die "apt-get update failed"
  local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  "${APT[@]}" install -y -qq -o Dpkg::Options::=--force-confdef \
    -o Dpkg::Options::=--force-confold "${missing[@]}" || rc=$?
  [[ $made_policy == 1 ]] && rm -f "$policy"
  [[ $rc == 0 ]] || die "apt-get install ${missing[*]} failed"
}

# fetch_containerd SUITE DEST: Debian SUITE's containerd package unpacked into
# DEST (dpkg -x), not installed. The apt source for SUITE is pinned at 50, so
# nothing on the system is ever upgraded from it. rig.sh writes the same files
# (shipit-SUITE.sources, preferences shipit-SUITE); an existing one is kept.
fetch_containerd() {
  local suite=$1 dest=$2
  if [[ -f $dest/.complete && -x $dest/usr/bin/containerd && -x $dest/usr/bin/ctr ]]; then
    return 0
  fi
  log "fetching containerd from Debian $suite"
  local sources=/etc/apt/sources.list.d/shipit-$suite.sources
  local prefs=/etc/apt/preferences.d/shipit-$suite
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  if [[ ! -e /usr/share/keyrings/debian-archive-trixie-automatic.gpg ]]; then
    "${APT[@]}" update -qq || die "apt-get update failed"
    "${APT[@]}" install -y -qq debian-archive-keyring
    [[ -e /usr/share/keyrings/debian-archive-trixie-automatic.gpg ]] ||
      die "debian-archive-keyring has no keys for Debian 13 and later"
  fi
  if [[ ! -f $sources ]]; then
    local mirror # apart from printf, so that a mirror not found stops the script (set -e)
    mirror=$(debian_mirror "$CODENAME")
    printf '%s\n' "# Added by shipit integration/nodes.sh to download containerd debs from $suite." \
      "# Pinned to 50 in $prefs: no installed package is upgraded from here." \
      "Types: deb" "URIs: $mirror" "Suites: $suite" "Components: main" \
      "Signed-By: $keyring" >"$sources"
  fi
  if [[ ! -f $prefs ]]; then
    printf '%s\n' "# Added by shipit integration/nodes.sh: never upgrade the system to $suite." \
      "Package: *" "Pin: release n=$suite" "Pin-Priority: 50" >"$prefs"
  fi
  "${APT[@]}" update -qq -o Dir::Etc::sourcelist="$sources" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0 || die "apt-get update of the $suite source failed"
  local debs=$dest.debs
  rm -rf "$debs" "$dest"
  mkdir -p "$debs" "$dest"
  (cd "$debs" && "${APT[@]}" download -qq -o APT::Sandbox::User=root -t "$suite" containerd) ||
    die "apt-get download -t $suite containerd failed"
  dpkg -x "$debs"/containerd_*.deb "$dest"
  [[ -x $dest/usr/bin/containerd && -x $dest/usr/bin/ctr ]] ||
    die "the $suite containerd deb has no usr/bin/containerd and usr/bin/ctr"
  local v=unstable
  [[ $suite == trixie ]] && v=13
  if apt-get -s upgrade 2>/dev/null | grep -qE "^Inst .*Debian(-Security)?:$v[ ./]"; then
    die "apt would upgrade packages from $suite; check $prefs"
  fi
  (cd "$debs" && ls ./*.deb) >"$dest/.complete"
}

ensure_binaries() {
  if [[ $C17_SUITE != system && -z $(unpacked "$TRIXIE") ]]; then
    fetch_containerd trixie "$NODE_TRIXIE"
  fi
  [[ -n $(unpacked "$SID") ]] || fetch_containerd sid "$NODE_SID"
  local n bin
  for n in "${NODE_NAMES[@]}"; do
    bin=$(node_prefix "$n")/usr/bin/containerd
    [[ -x $bin ]] || die "node $n: no containerd at $bin"
  done
}

# ---------------------------------------------------------------- containerd

node_config() {
  local n=$1 d sock gid
  d=$(node_dir "$n")
  sock=$(node_sock "$n")
  gid=$(getent group "$GROUP" | cut -d: -f3)
  mkdir -p "$d/root" "$d/state" "$d/opt" "$(dirname "$sock")"
  chmod 755 "$RIG" "$NODES" "$d"
  # Every directory down to the socket must be traversable by the ssh users.
  local p=$(dirname "$sock")
  while [[ $p != "$d" && $p == "$d"/* ]]; do
    chmod 755 "$p"
    p=$(dirname "$p")
  done
  write_if_changed "$d/config.toml" "# containerd for node $n (written by integration/nodes.sh)
version = 2
root = \"$d/root\"
state = \"$d/state\"
# No kubelet here: the CRI plugin is off.
disabled_plugins = [\"io.containerd.grpc.v1.cri\"]

[grpc]
  address = \"$sock\"
  gid = $gid

[plugins.\"io.containerd.internal.v1.opt\"]
  path = \"$d/opt\"" || true
}

start_containerd() {
  local n=$1 d bin sock
  d=$(node_dir "$n")
  sock=$(node_sock "$n")
  bin=$(node_prefix "$n")/usr/bin/containerd
  if live_pid "$d/containerd.pid" "$d/config.toml" >/dev/null; then
    return 0
  fi
  log "$n: starting containerd ($("$bin" --version | awk '{print $3}'))"
  rm -f "$d/containerd.pid" "$sock"
  PATH=$(node_prefix "$n")/usr/bin:$BASE_PATH spawn "$d/containerd.log" \
    "$bin" --config "$d/config.toml"
  echo $! >"$d/containerd.pid"
}

wait_containerd() {
  local n=$1 d sock i
  d=$(node_dir "$n")
  sock=$(node_sock "$n")
  for ((i = 0; i < 300; i++)); do
    live_pid "$d/containerd.pid" "$d/config.toml" >/dev/null ||
      die "$n: containerd exited; last log lines:
$(tail -n 20 "$d/containerd.log")"
    if [[ -S $sock ]] && "$(node_ctr "$n")" -a "$sock" version >/dev/null 2>&1; then
      break
    fi
    sleep 0.1
  done
  ((i < 300)) || die "$n: containerd did not answer on $sock in 30s; last log lines:
$(tail -n 20 "$d/containerd.log")"
  # A Kubernetes node always has the kubelet's namespace.
  if ! "$(node_ctr "$n")" -a "$sock" namespaces ls -q | grep -qx k8s.io; then
    "$(node_ctr "$n")" -a "$sock" namespaces create k8s.io
  fi
}

# ---------------------------------------------------------------- users

# A k3s node has a `k3s` binary whose `k3s ctr` knows the k3s socket.
write_k3s_wrapper() {
  mkdir -p "$NODES/k3s-bin"
  write_if_changed "$NODES/k3s-bin/k3s" "#!/bin/sh
# Stands in for k3s on the rig (written by integration/nodes.sh): \`k3s ctr\` is
# containerd's ctr with the k3s socket.
if [ \"\${1:-}\" = ctr ]; then
  shift
  exec $(node_ctr c21) --address $(node_sock c21) \"\$@\"
fi
echo \"k3s (rig stand-in): only 'k3s ctr' is here\" >&2
exit 1" || true
  chmod 755 "$NODES/k3s-bin" "$NODES/k3s-bin/k3s"
}

# The PATH a node's users get: the node's ctr and a few tools, and no docker
# (Debian 12 has /bin -> /usr/bin, where the rig's docker CLI lives).
node_bin() {
  local n=$1 b
  b=$(node_dir "$n")/bin
  mkdir -p "$b"
  ln -sfn "$(node_ctr "$n")" "$b/ctr"
  local tool
  for tool in sh uname id cat sudo true; do
    ln -sfn "$(command -v "$tool")" "$b/$tool"
  done
  chmod 755 "$b"
  echo "$b"
}

ensure_users() {
  getent group "$GROUP" >/dev/null || groupadd --system "$GROUP"
  local u home
  for u in "${USERS[@]}"; do
    if ! id "$u" >/dev/null 2>&1; then
      log "creating user $u"
      useradd --create-home --shell /bin/bash "$u"
    fi
    case $u in
    rig-node | rig-node-k3s)
      id -nG "$u" | tr ' ' '\n' | grep -qx "$GROUP" || usermod -aG "$GROUP" "$u"
      ;;
    *)
      if id -nG "$u" | tr ' ' '\n' | grep -qx "$GROUP"; then gpasswd -d "$u" "$GROUP" >/dev/null; fi
      ;;
    esac
    [[ "$(getent shadow "$u" | cut -d: -f2)" == "*" ]] || usermod -p '*' "$u"
    home=$(getent passwd "$u" | cut -d: -f6)
    mkdir -p "$home/.ssh"
    write_if_changed "$home/$AUTH_KEYS" "$(cat "$SSH/id_ed25519.pub")" || true
    chown -R "$u:" "$home/.ssh"
    chmod 700 "$home/.ssh"
    chmod 600 "$home/$AUTH_KEYS"
  done
  local rule
  # Both the binary and the link on the users' PATH: sudo 1.9.16 (Debian 13) matches
  # the path as run, 1.9.13 (Debian 12) also its target.
  rule="# Written by shipit integration/nodes.sh: rig-node-sudo may run the nodes' ctr.
rig-node-sudo ALL=(root) NOPASSWD: $(node_ctr c17), $(node_ctr c21), $(node_dir c17)/bin/ctr, $(node_dir c21)/bin/ctr"
  printf '%s\n' "$rule" >"$SUDOERS.tmp-check"
  visudo -cqf "$SUDOERS.tmp-check" || die "visudo rejects the sudoers rule"
  mv -f "$SUDOERS.tmp-check" "$SUDOERS"
  chmod 440 "$SUDOERS"
}

# ---------------------------------------------------------------- ssh

ensure_sshd() {
  local n=$1 port conf pidfile bin sock allow
  port=$(node_port "$n")
  conf=$SSH/sshd_config-$n
  pidfile=$SSH/sshd-$n.pid
  bin=$(node_bin "$n")
  sock=$(node_sock "$n")
  allow="rig-node rig-node-sudo rig-node-none"
  [[ $n == c21 ]] && allow+=" rig-node-k3s"
  local cfg
  cfg="$(sshd_config_head "sshd for shipit node $n (written by integration/nodes.sh)" \
    "$SSH_HOST:$port" "$pidfile" "$allow")

Match User rig-node,rig-node-sudo,rig-node-none
  SetEnv PATH=$bin CONTAINERD_ADDRESS=$sock
Match User rig-node-k3s
  SetEnv PATH=$NODES/k3s-bin:$bin
"
  local changed=0
  write_if_changed "$conf" "$cfg" && changed=1
  run_sshd "$conf" "$pidfile" "$SSH/sshd-$n.log" "$changed" "$SSH_HOST:$port" "$n: "
}

ssh_alias() {
  ssh_host_block "$1" "$SSH_HOST" "$3" "$2" "$SSH/id_ed25519" "$SSH/known_hosts"
}

write_ssh_client_files() {
  local hosts="" n t
  for n in "${NODE_NAMES[@]}"; do
    for t in ed25519 rsa; do
      hosts+="[$SSH_HOST]:$(node_port "$n") $(cut -d' ' -f1,2 "$SSH/ssh_host_${t}_key.pub")
"
    done
  done
  write_if_changed "$SSH/known_hosts" "${hosts%$'\n'}" || true
  local cfg="# OpenSSH client config for the shipit nodes (written by integration/nodes.sh).
# Use: ssh -F $SSH/config node-c17 ctr version"
  for n in "${NODE_NAMES[@]}"; do
    cfg+=$(ssh_alias "node-$n" rig-node "$(node_port "$n")")
    cfg+=$(ssh_alias "node-$n-sudo" rig-node-sudo "$(node_port "$n")")
    cfg+=$(ssh_alias "node-$n-none" rig-node-none "$(node_port "$n")")
  done
  cfg+=$(ssh_alias node-k3s rig-node-k3s "$(node_port c21)")
  write_if_changed "$SSH/config" "$cfg" || true
  chmod 644 "$SSH/config" "$SSH/known_hosts"
}

node_ssh() { ssh -F "$SSH/config" -o ConnectTimeout=10 "$@" </dev/null; }

node_version() { "$(node_ctr "$1")" --version | awk '{print $3}' | sed 's/[~+].*//'; }

check_ssh() {
  local n want got
  for n in "${NODE_NAMES[@]}"; do
    want=$("$(node_ctr "$n")" -a "$(node_sock "$n")" version | awk '/^Server:/ { s = 1 } s && /Version:/ { print $2; exit }')
    got=$(node_ssh "node-$n" ctr version 2>&1 | awk '/^Server:/ { s = 1 } s && /Version:/ { print $2; exit }') ||
      die "ssh node-$n ctr version failed: $got"
    [[ $got == "$want" ]] || die "ssh node-$n reached containerd '$got', expected '$want'"
    got=$(node_ssh "node-$n-sudo" sudo -n "$(node_ctr "$n")" -a "$(node_sock "$n")" version 2>&1) ||
      die "ssh node-$n-sudo sudo -n ctr version failed: $got"
    if got=$(node_ssh "node-$n-none" ctr version 2>&1); then
      die "node-$n-none can reach containerd, but should not"
    fi
    if node_ssh "node-$n" 'command -v docker' >/dev/null 2>&1; then
      die "node-$n has docker on its PATH"
    fi
  done
  got=$(node_ssh node-k3s k3s ctr version 2>&1) || die "ssh node-k3s k3s ctr version failed: $got"
}

# ---------------------------------------------------------------- nodes.json

write_nodes_json() {
  local n first=1 out ver k3s
  out="{\"nodes_dir\": $(json_str "$NODES"),
 \"nodes\": {"
  for n in "${NODE_NAMES[@]}"; do
    ver=$(node_version "$n")
    k3s=""
    if [[ $n == c21 ]]; then k3s=', "k3s": "node-k3s"'; fi
    [[ $first == 1 ]] || out+=","
    first=0
    out+="
  $(json_str "$n"): {\"version\": $(json_str "$ver"), \"socket\": $(json_str "$(node_sock "$n")"), \"ctr\": $(json_str "$(node_ctr "$n")"), \"ssh_port\": $(node_port "$n"), \"namespace\": \"k8s.io\", \"snapshotter\": \"overlayfs\", \"aliases\": {\"direct\": \"node-$n\", \"sudo\": \"node-$n-sudo\", \"none\": \"node-$n-none\"$k3s}}"
  done
  out+="},
 \"ssh\": {\"host\": \"$SSH_HOST\", \"config\": $(json_str "$SSH/config"), \"known_hosts\": $(json_str "$SSH/known_hosts"), \"identity\": $(json_str "$SSH/id_ed25519")}}"
  write_if_changed "$NODES/nodes.json" "$out" || true
  chmod 644 "$NODES/nodes.json"
}

# ---------------------------------------------------------------- commands

cmd_up() {
  [[ $# -eq 0 ]] || die "up: unknown argument $1"
  check_platform
  take_lock "$NODES"
  ensure_packages
  ensure_binaries
  ensure_ssh_keys "$SSH" shipit-nodes
  ensure_users
  write_k3s_wrapper
  local n
  for n in "${NODE_NAMES[@]}"; do
    node_config "$n"
    start_containerd "$n"
  done
  for n in "${NODE_NAMES[@]}"; do
    wait_containerd "$n"
    ensure_sshd "$n"
  done
  write_ssh_client_files
  check_ssh
  write_nodes_json
  log "up: $(cmd_status_lines | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
  log "nodes description: $NODES/nodes.json"
}

cmd_down() {
  local purge=0 arg
  for arg in "$@"; do
    case $arg in
    --purge) purge=1 ;;
    *) die "down: unknown argument $arg" ;;
    esac
  done
  if [[ $EUID -ne 0 ]]; then
    echo "nodes: must run as root" >&2
    exit 3
  fi
  [[ -d $NODES ]] || return 0
  take_lock "$NODES"
  local n d
  for n in "${NODE_NAMES[@]}"; do
    stop_pid "$SSH/sshd-$n.pid" "$SSH/sshd_config-$n" 10
    d=$(node_dir "$n")
    stop_pid "$d/containerd.pid" "$d/config.toml" 30
  done
  log "down: stopped"
  if [[ $purge == 1 ]]; then
    # Unmount what a killed containerd may have left below $NODES, deepest first.
    awk -v r="$NODES/" 'index($2, r) == 1 { print $2 }' /proc/self/mounts |
      sort -r | while read -r m; do umount -l "$m" || true; done
    for n in "${NODE_NAMES[@]}"; do
      rm -rf "$(node_dir "$n")"
    done
    rm -rf "$SSH" "$NODES/k3s-bin" "$NODES/nodes.json"
    log "down --purge: removed node data and keys (kept $CACHE)"
  fi
}

cmd_status_lines() {
  local n rc=0 pid
  for n in "${NODE_NAMES[@]}"; do
    if pid=$(live_pid "$(node_dir "$n")/containerd.pid" "$(node_dir "$n")/config.toml") &&
      timeout 10 "$(node_ctr "$n")" -a "$(node_sock "$n")" version >/dev/null 2>&1 &&
      live_pid "$SSH/sshd-$n.pid" "$SSH/sshd_config-$n" >/dev/null; then
      echo "$n: up (containerd $(node_version "$n"), pid $pid, ssh $SSH_HOST:$(node_port "$n"))"
    else
      echo "$n: down"
      rc=1
    fi
  done
  return $rc
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status_lines ;;
  *)
    echo "usage: $0 up | down [--purge] | status" >&2
    exit 2
    ;;
  esac
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
