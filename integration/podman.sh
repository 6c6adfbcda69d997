#!/usr/bin/env bash
# shipit integration rig, Podman part: Debian's Podman reached over SSH, rootful and
# rootless, beside the Docker engines of rig.sh (which does not need to be up).
#
#   podman.sh up            install what is missing, create the users, start an sshd,
#                           write $RIG/podman/podman.json. Idempotent.
#   podman.sh down [--purge] stop the sshd (by pidfile). --purge also deletes the
#                           rootful storage, the keys and podman.json.
#   podman.sh status        one line; exit 0 iff the sshd is up.
#
# Users (ssh aliases of the same names in $RIG/podman/ssh/config):
#   rig-podman       rootful Podman: `podman` on its PATH is `sudo -n /usr/bin/podman`
#                    with its storage under $RIG/podman/root (overlay)
#   rig-podman-rl    rootless Podman in its own home (vfs), subuids/subgids from useradd
#   rig-podman-none  neither podman nor docker on its PATH (for the error path)
# No docker CLI is on these users' PATH, so each looks like a host with only Podman.
# sshd listens on 127.0.0.1:${SHIPIT_PODMAN_SSH_PORT:-SHIPIT_RIG_SSH_PORT+200}.
set -euo pipefail
shopt -s inherit_errexit

export DEBIAN_FRONTEND=noninteractive
RIG=${SHIPIT_RIG_DIR:-/var/tmp/shipit-rig}
PM=$RIG/podman
SSH=$PM/ssh
SSH_HOST=127.0.0.1
SSH_PORT=${SHIPIT_PODMAN_SSH_PORT:-$((${SHIPIT_RIG_SSH_PORT:-2222} + 200))}
AUTH_KEYS=.ssh/authorized_keys.shipit-podman-$SSH_PORT
ROOTFUL=rig-podman
ROOTLESS=rig-podman-rl
NONE=rig-podman-none
USERS=("$ROOTFUL" "$ROOTLESS" "$NONE")
SUDOERS=/etc/sudoers.d/shipit-rig-podman

ME=podman
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $(id -u) == 0 ]] || die "run as root"

ensure_packages() {
  local missing=() p i
  for p in podman uidmap slirp4netns fuse-overlayfs sudo openssh-server; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
      missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  for ((i = 0; i < 60; i++)); do # another install may hold the dpkg lock
    if apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$PM/apt.log" 2>&1; then
      return 0
    fi
    grep -q 'Could not get lock\|dpkg frontend lock' "$PM/apt.log" || break
    sleep 5
  done
  die "apt-get install ${missing[*]} failed: $(tail -n 1 "$PM/apt.log")"
}

ensure_bins() {
  # What each user finds on its PATH: podman (and the uid-mapping helpers rootless
  # Podman runs), never docker.
  mkdir -p "$PM/bin-rootful" "$PM/bin-rootless" "$PM/bin-none" "$PM/root" "$PM/run"
  write_if_changed "$PM/bin-rootful/podman" "#!/bin/sh
# rootful Podman, storage kept in the rig (written by integration/podman.sh)
exec /usr/bin/sudo -n /usr/bin/podman --root $PM/root --runroot $PM/run --storage-driver overlay \\
  --cgroup-manager cgroupfs --events-backend file \"\$@\"" || true
  chmod 755 "$PM/bin-rootful/podman"
  local b
  for b in podman newuidmap newgidmap slirp4netns fuse-overlayfs; do
    ln -sfn "/usr/bin/$b" "$PM/bin-rootless/$b"
  done
  # podman image scp (which the benchmark compares with) runs these on the far end.
  for b in mktemp rm; do
    ln -sfn "/usr/bin/$b" "$PM/bin-rootful/$b"
    ln -sfn "/usr/bin/$b" "$PM/bin-rootless/$b"
  done
  write_if_changed "$SUDOERS" "# shipit rig: rootful Podman for $ROOTFUL
$ROOTFUL ALL=(root) NOPASSWD: /usr/bin/podman" || true
  chmod 440 "$SUDOERS"
  visudo -cq -f "$SUDOERS" || die "$SUDOERS does not parse"
}

ensure_users() {
  local u home uid
  for u in "${USERS[@]}"; do
    if ! id "$u" >/dev/null 2>&1; then
      log "creating user $u"
      useradd --create-home --shell /bin/bash "$u" # adds /etc/subuid, /etc/subgid
    fi
    [[ "$(getent shadow "$u" | cut -d: -f2)" == "*" ]] || usermod -p '*' "$u"
    home=$(getent passwd "$u" | cut -d: -f6)
    mkdir -p "$home/.ssh"
    write_if_changed "$home/$AUTH_KEYS" "$(cat "$SSH/id_ed25519.pub")" || true
    chown -R "$u:" "$home/.ssh"
    chmod 700 "$home/.ssh"
    chmod 600 "$home/$AUTH_KEYS"
  done
  grep -q "^$ROOTLESS:" /etc/subuid || die "$ROOTLESS has no /etc/subuid entry"
  grep -q "^$ROOTLESS:" /etc/subgid || die "$ROOTLESS has no /etc/subgid entry"
  home=$(getent passwd "$ROOTLESS" | cut -d: -f6)
  uid=$(id -u "$ROOTLESS")
  mkdir -p "$home/.config/containers" "$PM/xdg-$uid"
  write_if_changed "$home/.config/containers/storage.conf" '[storage]
driver = "vfs"' || true
  write_if_changed "$home/.config/containers/containers.conf" '[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"' || true
  chown -R "$ROOTLESS:" "$home/.config" "$PM/xdg-$uid"
  chmod 700 "$PM/xdg-$uid"
}

ensure_sshd() {
  local conf=$SSH/sshd_config uid
  uid=$(id -u "$ROOTLESS")
  local cfg
  cfg="$(sshd_config_head "sshd for shipit's Podman rig (written by integration/podman.sh)" \
    "$SSH_HOST:$SSH_PORT" "$SSH/sshd.pid" "${USERS[*]}")
# podman image scp copies its archive with sftp (the benchmark compares with it)
Subsystem sftp internal-sftp

Match User $ROOTFUL
  SetEnv PATH=$PM/bin-rootful
Match User $ROOTLESS
  SetEnv PATH=$PM/bin-rootless XDG_RUNTIME_DIR=$PM/xdg-$uid
Match User $NONE
  SetEnv PATH=$PM/bin-none"
  local changed=0
  write_if_changed "$conf" "$cfg" && changed=1
  run_sshd "$conf" "$SSH/sshd.pid" "$SSH/sshd.log" "$changed" "$SSH_HOST:$SSH_PORT"
}

write_client_files() {
  local hosts="" t u cfg
  for t in ed25519 rsa; do
    hosts+="[$SSH_HOST]:$SSH_PORT $(cut -d' ' -f1,2 "$SSH/ssh_host_${t}_key.pub")
"
  done
  write_if_changed "$SSH/known_hosts" "${hosts%$'\n'}" || true
  cfg="# OpenSSH client config for shipit's Podman rig (written by integration/podman.sh).
# Use: ssh -F $SSH/config $ROOTFUL podman info"
  for u in "${USERS[@]}"; do
    cfg+="
$(ssh_host_block "$u" "$SSH_HOST" "$SSH_PORT" "$u" "$SSH/id_ed25519" "$SSH/known_hosts")"
  done
  write_if_changed "$SSH/config" "$cfg" || true
  chmod 644 "$SSH/config" "$SSH/known_hosts" "$SSH/id_ed25519.pub"
}

pm_ssh() { ssh -F "$SSH/config" -o ConnectTimeout=10 "$@" </dev/null; }

check_podman() { # user: prints "version rootless driver"
  # stdout alone: a first rootless run may warn on stderr (say, while it sets up its store)
  local out err=$PM/podman-info.err
  out=$(pm_ssh "$1" podman info --format \
    "'{{.Version.Version}} {{.Host.Security.Rootless}} {{.Store.GraphDriverName}}'" 2>"$err") ||
    die "ssh $1 podman info failed: $(tail -n 1 "$err")"
  tail -n 1 <<<"$out"
}

write_json() {
  local rf rl out line
  line=$(check_podman "$ROOTFUL") || exit 1
  read -r -a rf <<<"$line"
  line=$(check_podman "$ROOTLESS") || exit 1
  read -r -a rl <<<"$line"
  [[ ${rf[1]} == false ]] || die "$ROOTFUL's podman is rootless"
  [[ ${rl[1]} == true ]] || die "$ROOTLESS's podman is not rootless"
  if pm_ssh "$NONE" 'command -v podman || command -v docker' >/dev/null 2>&1; then
    die "$NONE finds podman or docker on its PATH"
  fi
  out="{\"rig_dir\": $(json_str "$RIG"),
 \"hosts\": {
  \"rootful\": {\"ssh_alias\": \"$ROOTFUL\", \"ssh_user\": \"$ROOTFUL\", \"version\": \"${rf[0]}\", \"rootless\": false, \"storage_driver\": \"${rf[2]}\", \"graph_root\": $(json_str "$PM/root")},
  \"rootless\": {\"ssh_alias\": \"$ROOTLESS\", \"ssh_user\": \"$ROOTLESS\", \"version\": \"${rl[0]}\", \"rootless\": true, \"storage_driver\": \"${rl[2]}\"},
  \"none\": {\"ssh_alias\": \"$NONE\", \"ssh_user\": \"$NONE\"}},
 \"ssh\": {\"host\": \"$SSH_HOST\", \"port\": $SSH_PORT, \"config\": $(json_str "$SSH/config"), \"known_hosts\": $(json_str "$SSH/known_hosts"), \"identity\": $(json_str "$SSH/id_ed25519")}}"
  write_if_changed "$PM/podman.json" "$out" || true
  chmod 644 "$PM/podman.json"
}

cmd_up() {
  mkdir -p "$PM"
  chmod 755 "$PM"
  ensure_packages
  ensure_ssh_keys "$SSH" shipit-podman
  ensure_bins
  ensure_users
  ensure_sshd
  write_client_files
  write_json
  log "up: rootful ${ROOTFUL}, rootless ${ROOTLESS} on $SSH_HOST:$SSH_PORT; $PM/podman.json"
}

cmd_down() {
  local pid
  if pid=$(live_pid "$SSH/sshd.pid" "$SSH/sshd_config"); then
    kill "$pid"
    log "sshd stopped"
  fi
  rm -f "$SSH/sshd.pid"
  if [[ ${1:-} == --purge ]]; then
    [[ -d $PM/root ]] && sudo -n /usr/bin/podman --root "$PM/root" --runroot "$PM/run" \
      --storage-driver overlay rmi -af >/dev/null 2>&1 || true
    rm -rf "$PM"
    rm -f "$SUDOERS"
  fi
}

cmd_status() {
  local pid
  if pid=$(live_pid "$SSH/sshd.pid" "$SSH/sshd_config"); then
    echo "podman sshd: up (pid $pid, $SSH_HOST:$SSH_PORT)"
  else
    echo "podman sshd: down"
    return 1
  fi
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down "${2:-}" ;;
status) cmd_status ;;
*) die "usage: podman.sh up|down [--purge]|status" ;;
esac
