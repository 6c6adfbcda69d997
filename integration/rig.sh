#!/usr/bin/env bash
# shipit integration rig: five real Docker engines and an sshd on one Debian 12
# or 13 machine, so tests can move images between engines the way users do.
#
#   rig.sh up [--rebuild]   install what is missing, start everything, build the
#                           test images, write $RIG/rig.json. Idempotent; fast
#                           when everything is already up.
#   rig.sh down [--purge]   stop what the rig started (by pidfile). --purge also
#                           deletes engine data, keys and build contexts (not
#                           the download cache).
#   rig.sh status           one line per engine and for sshd; exit 0 iff all up.
#
# Engines (each with its own containerd, data-root, exec-root, socket, log):
#   d20   Docker 20.10 (Debian 12 docker.io) + containerd 1.6   classic store
#   d26   Docker 26.1  (Debian 13 docker.io) + containerd 1.7   classic store
#   d26c  Docker 26.1  + containerd image store                 containerd store
#   d28   Docker 28.5  (Debian unstable docker.io) + containerd 2.1  classic store
#   d28c  Docker 28.5  + containerd image store                 containerd store
# Each comes from the system's packages when it is this machine's release, else
# from the other suite's debs unpacked into the cache (see plan_release).
# sshd on 127.0.0.1:2222; user rig-dXX gets DOCKER_HOST of engine dXX.
#
# State lives in ${SHIPIT_RIG_DIR:-/var/tmp/shipit-rig}; see integration/README.md.
set -euo pipefail
# Also fail inside $(...), e.g. in inputs_hash.
shopt -s inherit_errexit

export DEBIAN_FRONTEND=noninteractive
# A caller's docker settings must not redirect our CLI calls, and we never touch
# the real user's ~/.docker (DOCKER_CONFIG points into the rig).
unset DOCKER_HOST DOCKER_CONTEXT DOCKER_TLS_VERIFY DOCKER_CERT_PATH
export DOCKER_BUILDKIT=0 # classic builder: works on all five, needs no images

RIG=${SHIPIT_RIG_DIR:-/var/tmp/shipit-rig}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DOCKER_CONFIG=$RIG/docker-config
CACHE=$RIG/cache
# The system's CLI (Debian 12: 20.10, API 1.41; Debian 13: 26.1) talks to every
# engine by API negotiation, and it exists on every machine that has docker.io,
# unlike /usr/local/bin/docker.
DOCKER=/usr/bin/docker
ENGINES=(d20 d26 d26c d28 d28c)
GROUP=shipit-rig
SSH_HOST=127.0.0.1
# A second rig (other SHIPIT_RIG_DIR, e.g. to try rig.sh itself) needs its own
# port; it shares the rig-* users but not their authorized keys file.
SSH_PORT=${SHIPIT_RIG_SSH_PORT:-2222}
AUTH_KEYS=.ssh/authorized_keys.shipit-rig-$SSH_PORT
SSH=$RIG/ssh
# Daemons get Debian's binaries only, never a runc or shim from /usr/local.
BASE_PATH=/usr/sbin:/usr/bin:/sbin:/bin
# Output of apt-get and dpkg goes here; it is shown when they fail.
APT_LOG=$RIG/apt.log

ME=rig
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------- helpers

engine_dir() { echo "$RIG/$1"; }
engine_sock() { echo "$RIG/$1/docker.sock"; }

# The docker CLI against one engine.
dk() {
  local e=$1
  shift
  "$DOCKER" -H "unix://$(engine_sock "$e")" "$@"
}

# ---------------------------------------------------------------- releases

# One code path for Debian 12 and 13. Each engine family (20.10, 26, 28) comes
# from the system's own packages when they are that version, else from another
# suite's debs, downloaded with `apt-get download` and unpacked with dpkg -x
# into $CACHE/SUITE without installing them (the system is never upgraded).
#   Debian 12: d20 system, d26 trixie, d28 sid
#   Debian 13: d20 bookworm, d26 system, d28 sid
# Set by plan_release (from check_platform).
RELEASE=""
CODENAME=""
declare -A FAMILY_SUITE=()
plan_release() {
  RELEASE=$1
  case $1 in
  12)
    CODENAME=bookworm
    FAMILY_SUITE=([d20]=system [d26]=trixie [d28]=sid)
    ;;
  13)
    CODENAME=trixie
    FAMILY_SUITE=([d20]=bookworm [d26]=system [d28]=sid)
    ;;
  esac
}

# d26c -> d26, d28c -> d28: the store is the only difference.
engine_family() { echo "${1%c}"; }
engine_store() { if [[ $1 == *c ]]; then echo containerd; else echo classic; fi; }

suite_label() {
  case $1 in
  bookworm) echo "Debian 12 (bookworm)" ;;
  trixie) echo "Debian 13 (trixie)" ;;
  sid) echo "Debian unstable (sid)" ;;
  esac
}
# Which Debian version string apt shows for packages of SUITE ("Debian:13.2").
suite_apt_version() {
  case $1 in
  bookworm) echo 12 ;;
  trixie) echo 13 ;;
  sid) echo unstable ;;
  esac
}

# Binaries and PATH per engine. containerd finds containerd-shim-runc-v2 on its
# PATH and the shim finds runc there: unpacked engines get their suite's
# binaries first but the system's runc: no runc is unpacked (trixie's and
# sid's need glibc 2.38, Debian 12 has 2.36; on 13 the system's serves 20.10).
engine_prefix() {
  local suite=${FAMILY_SUITE[$(engine_family "$1")]}
  if [[ $suite == system ]]; then echo ""; else echo "$CACHE/$suite"; fi
}
engine_path() {
  local p
  p=$(engine_prefix "$1")
  if [[ -n $p ]]; then
    echo "$p/usr/sbin:$p/usr/bin:$BASE_PATH"
  else
    echo "$BASE_PATH"
  fi
}

# ---------------------------------------------------------------- checks

check_platform() {
  if [[ $EUID -ne 0 ]]; then
    echo "rig: must run as root (it installs packages, creates users, starts dockerd)" >&2
    exit 3
  fi
  local id="" version_id=""
  if [[ -r /etc/os-release ]]; then
    # shellcheck disable=SC1091
    id=$(. /etc/os-release && echo "${ID:-}")
    # shellcheck disable=SC1091
    version_id=$(. /etc/os-release && echo "${VERSION_ID:-}")
  fi
  if [[ $id != debian || ($version_id != 12 && $version_id != 13) ]]; then
    echo "rig: needs Debian 12 (bookworm) or 13 (trixie); this is ${id:-unknown} ${version_id:-?}" >&2
    exit 3
  fi
  plan_release "$version_id"
}

# ---------------------------------------------------------------- packages

# Keep existing config files without asking (no stdin, no tty); wait for a
# dpkg lock held by another apt run instead of failing at once.
APT_INSTALL=(apt-get install -y -q -o DPkg::Lock::Timeout=600
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

# apt_quiet WHAT CMD...: run an apt-get/dpkg command with its output (some
# hundred lines of dpkg progress even with -qq) in $APT_LOG; on failure, die
# naming WHAT, with the log's last lines.
apt_quiet() {
  local what=$1
  shift
  mkdir -p "$RIG"
  printf '\n$ %s\n' "$*" >>"$APT_LOG"
  if ! "$@" >>"$APT_LOG" 2>&1 </dev/null; then
    die "$what failed; last lines of $APT_LOG:
$(tail -n 25 "$APT_LOG")"
  fi
}

APT_UPDATED=0
apt_update_once() {
  if [[ $APT_UPDATED == 0 ]]; then
    log "apt-get update"
    apt_quiet "apt-get update" apt-get update -q -o DPkg::Lock::Timeout=600
    APT_UPDATED=1
  fi
}

# Units enabled for the next boot: the symlinks in /etc/systemd/system's
# *.wants directories (what `systemctl enable` and package scripts create,
# with or without a running systemd).
enabled_units() {
  [[ -d /etc/systemd/system ]] || return 0
  find /etc/systemd/system -mindepth 2 -maxdepth 2 -type l -path '*.wants/*' \
    -printf '%f\n' | LC_ALL=C sort -u
}

# The packages' scripts enable docker.service, docker.socket,
# containerd.service and ssh.service (and podman's netavark helpers) for the
# next boot. The rig starts its own daemons and never needs them, so it
# disables again those of them this install enabled (nothing that was enabled
# before; nothing else, e.g. a getty of a systemd pulled in as a dependency)
# and says so.
RIG_UNITS='^(docker|containerd|ssh|sshd|sshd-keygen|podman|netavark)([.@-].*)?\.(service|socket)$'
disable_new_units() {
  local before=$1 now newly=() u
  now=$(enabled_units)
  mapfile -t newly < <(LC_ALL=C comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$now") |
    grep -E "$RIG_UNITS" || true)
  [[ ${#newly[@]} -gt 0 ]] || return 0
  if command -v systemctl >/dev/null; then
    apt_quiet "systemctl disable ${newly[*]}" systemctl disable "${newly[@]}"
  else
    for u in "${newly[@]}"; do
      find /etc/systemd/system -mindepth 2 -maxdepth 2 -type l -path "*.wants/$u" -delete
    done
  fi
  log "disabled for the next boot what the install enabled: ${newly[*]} (the rig starts its own daemons; 'systemctl enable' them if you want them)"
}

ensure_packages() {
  # The rig's engines from the system's release, sshd, busybox for the test
  # images, and the archive writers skopeo and podman.
  local pkgs=(docker.io containerd runc openssh-server openssh-client
    busybox-static zstd iproute2 debian-archive-keyring util-linux passwd
    skopeo podman sudo)
  # Debian 13 ships the docker CLI in its own package.
  [[ $RELEASE == 13 ]] && pkgs+=(docker-cli)
  local missing=() p
  # One dpkg-query for all (a warm `up` should not fork per package).
  local installed
  installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${pkgs[@]}" 2>/dev/null |
    awk '$2 == "install" && $3 == "ok" && $4 == "installed" { print $1 }') || true
  for p in "${pkgs[@]}"; do
    [[ $'\n'$installed$'\n' == *$'\n'$p$'\n'* ]] || missing+=("$p")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  apt_update_once
  log "installing ${missing[*]} (log: $APT_LOG)"
  # Package scripts must not start dockerd/sshd on their default sockets and
  # ports: the rig starts its own. policy-rc.d exit 101 = "don't start".
  local policy=/usr/sbin/policy-rc.d made_policy=0 units
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
  fi
  units=$(enabled_units)
  local rc=0
  (apt_quiet "apt-get install ${missing[*]}" "${APT_INSTALL[@]}" "${missing[@]}") || rc=$?
  [[ $made_policy == 1 ]] && rm -f "$policy"
  [[ $rc == 0 ]] || exit 1
  disable_new_units "$units"
}

# What is unpacked from SUITE: an engine's docker.io + containerd, and from
# sid also the archive writers crane (go-containerregistry) and docker-buildx.
suite_packages() {
  case $1 in
  sid) echo "docker.io containerd crane docker-buildx" ;;
  *) echo "docker.io containerd" ;;
  esac
}

# Refresh only the index of apt source file $1 (keep the other lists as they are).
apt_update_source() {
  printf '\n$ apt-get update (%s only)\n' "$1" >>"$APT_LOG"
  apt-get update -q -o DPkg::Lock::Timeout=600 \
    -o Dir::Etc::sourcelist="$1" -o Dir::Etc::sourceparts=- \
    -o APT::Get::List-Cleanup=0 >>"$APT_LOG" 2>&1 </dev/null
}

# ensure_suite SUITE: its packages downloaded and unpacked into $CACHE/SUITE,
# without installing them: the system keeps its own release's packages.
ensure_suite() {
  local suite=$1 dir=$CACHE/$1 pkgs
  read -ra pkgs <<<"$(suite_packages "$suite")"
  local stamp=$dir/.complete
  if [[ -f $stamp && "$(head -n 1 "$stamp")" == "packages: ${pkgs[*]/%//$suite}" &&
    -x $dir/usr/sbin/dockerd && -x $dir/usr/bin/containerd ]]; then
    return 0
  fi
  log "fetching ${pkgs[*]} from $(suite_label "$suite")"
  local sources=/etc/apt/sources.list.d/shipit-$suite.sources
  local prefs=/etc/apt/preferences.d/shipit-$suite
  local keyring=/usr/share/keyrings/debian-archive-keyring.gpg mirror
  mirror=$(debian_mirror "$CODENAME")
  write_if_changed "$sources" "# Added by shipit integration/rig.sh to download Docker debs from $suite.
# Pinned to 50 in $prefs: no installed package is upgraded from here.
Types: deb
URIs: $mirror
Suites: $suite
Components: main
Signed-By: $keyring" || true
  # Priority 50 (< 100 of installed versions): apt never upgrades an installed
  # package to $suite, and prefers the system's release for anything in both.
  write_if_changed "$prefs" "# Added by shipit integration/rig.sh: never upgrade the system to $suite.
Package: *
Pin: release n=$suite
Pin-Priority: 50" || true

  # The suite's Release file may be signed by keys an old
  # debian-archive-keyring lacks (Debian 12 got trixie's in 2023.3+deb12u2):
  # then upgrade the keyring from the system's own release and try again.
  # Any other failure (an expired Release file, an unreachable mirror) stops
  # here with apt's own error line.
  if ! apt_update_source "$sources"; then
    local updated=0
    if tail -n 30 "$APT_LOG" | grep -qE 'NO_PUBKEY|is not signed'; then
      apt_update_once
      log "upgrading debian-archive-keyring for the $suite signing keys"
      apt_quiet "apt-get install debian-archive-keyring" "${APT_INSTALL[@]}" debian-archive-keyring
      apt_update_source "$sources" && updated=1
    fi
    [[ $updated == 1 ]] ||
      die "apt-get update of $sources failed: $(grep -E '^E:' "$APT_LOG" | tail -n 1) (log: $APT_LOG)"
  fi

  local debs=$CACHE/debs-$suite
  rm -rf "$debs" "$dir"
  mkdir -p "$debs" "$dir"
  # APT::Sandbox::User=root: the _apt user cannot write into $RIG/cache.
  # PKG/SUITE takes that suite's version even when it is older than the
  # installed one (-t would not: bookworm's 20.10 on a Debian 13 machine).
  (cd "$debs" && apt_quiet "apt-get download ${pkgs[*]/%//$suite}" \
    apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]/%//$suite}")
  local deb
  for deb in "$debs"/*.deb; do
    dpkg -x "$deb" "$dir"
  done
  [[ -x $dir/usr/sbin/dockerd && -x $dir/usr/bin/containerd ]] ||
    die "$suite debs did not contain usr/sbin/dockerd and usr/bin/containerd"

  # Sanity: the system must not want to upgrade anything to $suite.
  # (-s lines read "Inst pkg [old] (new Debian:13.x/stable [amd64])".)
  local v
  v=$(suite_apt_version "$suite")
  if apt-get -s upgrade 2>/dev/null | grep -qE "^Inst .*Debian(-Security)?:$v[ ./]"; then
    die "apt would upgrade packages from $suite; check $prefs"
  fi
  { echo "packages: ${pkgs[*]/%//$suite}" && (cd "$debs" && ls ./*.deb); } >"$stamp"
}

# Every suite the engines and tools of this release need.
ensure_suites() {
  local f
  for f in d20 d26 d28; do
    [[ ${FAMILY_SUITE[$f]} == system ]] || ensure_suite "${FAMILY_SUITE[$f]}"
  done
}

# ---------------------------------------------------------------- tools

# Archive writers for the tests' corpus, each recorded in rig.json only if its
# binary runs here: skopeo and podman from the system's release, crane and
# docker-buildx unpacked from sid (they need glibc 2.34), ctr per engine.
declare -A TOOLS=()
ensure_tools() {
  local sid=$CACHE/sid
  local -A cmd=(
    [skopeo]="/usr/bin/skopeo --version"
    [podman]="/usr/bin/podman --version"
    [crane]="$sid/usr/bin/crane version"
    [buildx]="$sid/usr/libexec/docker/cli-plugins/docker-buildx version"
  )
  local t out
  for t in skopeo podman crane buildx; do
    # (Word splitting of the command line is wanted: the paths have no spaces.)
    # shellcheck disable=SC2086
    if out=$(${cmd[$t]} 2>&1); then
      TOOLS[$t]=${cmd[$t]%% *}
    else
      log "tool $t does not run here, left out of rig.json: $(head -n 1 <<<"$out")"
    fi
  done
  # buildx is a CLI plugin: the rig's docker config finds it.
  if [[ -n ${TOOLS[buildx]:-} ]]; then
    mkdir -p "$DOCKER_CONFIG/cli-plugins"
    ln -sfn "${TOOLS[buildx]}" "$DOCKER_CONFIG/cli-plugins/docker-buildx"
  fi
}

# ---------------------------------------------------------------- engines

engine_config() {
  local e=$1 d
  d=$(engine_dir "$e")
  mkdir -p "$d/containerd" "$d/root" "$d/exec"
  # $RIG and $d must be traversable by the rig-* users to reach the socket;
  # the data-root stays root-only (dockerd sets its mode itself).
  chmod 755 "$RIG" "$d"

  # One containerd per engine, started by us (not dockerd's managed one): we
  # control its binary, config and pidfile, and dockerd never latches onto a
  # system containerd at /run/containerd/containerd.sock.
  local bin cfg
  bin=$(engine_prefix "$e")/usr/bin/containerd
  case $("$bin" --version | awk '{print $3}') in
  v1.* | 1.*)
    # containerd 1.6/1.7: config version 2.
    cfg="version = 2
root = \"$d/containerd/root\"
state = \"$d/containerd/state\"
# dockerd does not use Kubernetes' CRI plugin.
disabled_plugins = [\"io.containerd.grpc.v1.cri\"]

[grpc]
  address = \"$d/containerd/containerd.sock\"

[plugins.\"io.containerd.internal.v1.opt\"]
  path = \"$d/containerd/opt\""
    ;;
  *)
    # containerd 2.x: config version 3; CRI is three plugins now, and NRI is
    # on by default with one socket for the whole machine
    # (/var/run/nri/nri.sock), which several containerds would fight over.
    cfg="version = 3
root = '$d/containerd/root'
state = '$d/containerd/state'
# dockerd does not use Kubernetes' CRI plugins, nor NRI.
disabled_plugins = ['io.containerd.grpc.v1.cri', 'io.containerd.cri.v1.images', 'io.containerd.cri.v1.runtime', 'io.containerd.nri.v1.nri']

[grpc]
  address = '$d/containerd/containerd.sock'

[plugins.'io.containerd.internal.v1.opt']
  path = '$d/containerd/opt'"
    ;;
  esac
  write_if_changed "$d/containerd/config.toml" "# containerd for rig engine $e (written by integration/rig.sh)
$cfg" || true

  # Each dockerd gets its own config file so /etc/docker/daemon.json, if any,
  # never applies.
  local features='{}'
  [[ $(engine_store "$e") == containerd ]] && features='{"features": {"containerd-snapshotter": true}}'
  write_if_changed "$d/daemon.json" "$features" || true
}

# Engines whose containerd this run (re)started.
declare -A CONTAINERD_STARTED=()

start_containerd() {
  local e=$1 d bin pid
  d=$(engine_dir "$e")
  bin=$(engine_prefix "$e")/usr/bin/containerd
  if pid=$(live_pid "$d/containerd/containerd.pid" "$d/containerd/config.toml"); then
    return 0
  fi
  log "$e: starting containerd ($("$bin" --version | awk '{print $3}'))"
  CONTAINERD_STARTED[$e]=1
  # A socket left by a killed containerd would fool wait_containerd.
  rm -f "$d/containerd/containerd.pid" "$d/containerd/containerd.sock"
  PATH=$(engine_path "$e") spawn "$d/containerd/containerd.log" \
    "$bin" --config "$d/containerd/config.toml"
  echo $! >"$d/containerd/containerd.pid"
}

wait_containerd() {
  local e=$1 d i
  d=$(engine_dir "$e")
  for ((i = 0; i < 300; i++)); do
    live_pid "$d/containerd/containerd.pid" "$d/containerd/config.toml" >/dev/null ||
      die "$e: containerd exited; last log lines:
$(tail -n 20 "$d/containerd/containerd.log")"
    [[ -S $d/containerd/containerd.sock ]] && return 0
    sleep 0.1
  done
  die "$e: containerd socket did not appear in 30s; last log lines:
$(tail -n 20 "$d/containerd/containerd.log")"
}

# PID of a dockerd we start in this run (to detect an early exit).
declare -A STARTED_DOCKERD=()
# Engines started or given a new image in this run: they get the smoke test.
declare -A CHANGED=()

start_dockerd() {
  local e=$1 d bin
  d=$(engine_dir "$e")
  bin=$(engine_prefix "$e")/usr/sbin/dockerd
  if live_pid "$d/docker.pid" "$d/docker.sock" >/dev/null; then
    if [[ -z ${CONTAINERD_STARTED[$e]:-} ]]; then
      return 0
    fi
    # Its containerd died and was restarted: dockerd's gRPC client would only
    # reconnect after a backoff of seconds (builds failed with "connection
    # refused" meanwhile), so restart dockerd too.
    log "$e: containerd was restarted; restarting dockerd"
    stop_pid "$d/docker.pid" "$d/docker.sock" 60
  fi
  # dockerd refuses to start over a pidfile whose PID is alive (maybe reused).
  rm -f "$d/docker.pid"
  local args=(
    --config-file "$d/daemon.json"
    --data-root "$d/root"
    --exec-root "$d/exec"
    -H "unix://$d/docker.sock"
    --pidfile "$d/docker.pid"
    --containerd "$d/containerd/containerd.sock"
    # The socket is root:shipit-rig 0660 so the ssh users can reach it.
    --group "$GROUP"
    # No networking setup on the host: containers run with --network none.
    --iptables=false --bridge=none --ip-forward=false
  )
  [[ $e != d20 ]] && args+=(--ip6tables=false)
  log "$e: starting dockerd ($("$bin" --version | sed 's/^Docker version //'))"
  PATH=$(engine_path "$e") spawn "$d/dockerd.log" "$bin" "${args[@]}"
  STARTED_DOCKERD[$e]=$!
  CHANGED[$e]=1
}

wait_dockerd() {
  local e=$1 d i pid=${STARTED_DOCKERD[$1]:-}
  d=$(engine_dir "$e")
  for ((i = 0; i < 600; i++)); do
    if dk "$e" version -f '{{.Server.Version}}' >/dev/null 2>&1; then
      return 0
    fi
    if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
      die "$e: dockerd exited during startup; last log lines:
$(tail -n 20 "$d/dockerd.log")"
    fi
    sleep 0.1
  done
  die "$e: dockerd did not answer on $(engine_sock "$e") within 60s; last log lines:
$(tail -n 20 "$d/dockerd.log")"
}

# ---------------------------------------------------------------- images

# Build inputs of image $1, one "SOURCE DEST" line each: the files in
# integration/images/$1 plus inputs that must not live in the repo (busybox,
# and for layered ~8 MB of real binary files: glibc's gconv modules, present
# on every Debian machine, so layer sizes and compression look real).
context_sources() {
  local name=$1 f
  (cd "$HERE/images/$name" && find . -type f | LC_ALL=C sort) | while read -r f; do
    echo "$HERE/images/$name/${f#./} ${f#./}"
  done
  echo "/bin/busybox busybox"
  if [[ $name == layered ]]; then
    local gconv
    # (grep without -m: an early exit would SIGPIPE dpkg and fail the pipe)
    gconv=$(dpkg -L libc6 | grep '/gconv$' | head -n1 || true)
    [[ -d $gconv ]] || die "libc6 has no gconv directory"
    find "$gconv" -maxdepth 1 -type f -name '*.so' | LC_ALL=C sort | while read -r f; do
      echo "$f bulk/${f##*/}"
    done
  fi
}

# Small files generated into the layered context (gone.txt is deleted by an
# upper layer; check.sh verifies that).
LAYERED_KEPT="kept"
LAYERED_GONE="this file is deleted by an upper layer"

# Hash of image $1's build inputs (names, modes, contents), stored as an image
# label so an unchanged image is not rebuilt. Computed from the sources, so a
# warm `up` does not have to copy the context.
inputs_hash() {
  local name=$1 list srcs
  list=$(context_sources "$name")
  mapfile -t srcs < <(cut -d' ' -f1 <<<"$list")
  # Destination names, then modes and contents of the sources, one process
  # each (a warm `up` hashes ~260 files; a fork per file would cost seconds).
  {
    cut -d' ' -f2 <<<"$list"
    stat -c %a "${srcs[@]}"
    sha256sum "${srcs[@]}" | cut -d' ' -f1
    if [[ $name == layered ]]; then printf '%s\n%s\n' "$LAYERED_KEPT" "$LAYERED_GONE"; fi
  } | sha256sum | cut -c1-32
}

# Build context for image $1 in $RIG/build/$1, made only when a build needs it.
make_context() {
  local name=$1 ctx=$RIG/build/$1 src dst
  rm -rf "$ctx"
  mkdir -p "$ctx"
  context_sources "$name" | while read -r src dst; do
    mkdir -p "$(dirname "$ctx/$dst")"
    cp -p "$src" "$ctx/$dst"
  done
  if [[ $name == layered ]]; then
    mkdir -p "$ctx/data"
    echo "$LAYERED_KEPT" >"$ctx/data/kept.txt"
    echo "$LAYERED_GONE" >"$ctx/data/gone.txt"
  fi
}

# image_ids ENGINE TAG...: "ID LABEL" per tag, one docker call for all; a tag
# the engine lacks gives no line.
image_ids() {
  local e=$1
  shift
  dk "$e" image inspect -f '{{.Id}} {{index .Config.Labels "shipit.rig.inputs"}}' "$@" 2>/dev/null || true
}

# build_image ENGINE NAME TAG...: build unless the tags are what the tests
# expect: every tag present, carrying the label with the current inputs hash,
# and all of them one image (the tests compare rosie:latest with rosie:test;
# an image shipped in from another engine has the label but another ID).
declare -A INPUTS_HASH=() CONTEXT_MADE=()
build_image() {
  local e=$1 name=$2 d hash
  shift 2
  d=$(engine_dir "$e")
  [[ -n ${INPUTS_HASH[$name]:-} ]] || INPUTS_HASH[$name]=$(inputs_hash "$name")
  hash=${INPUTS_HASH[$name]}
  local tag need=$REBUILD tagargs=() lines
  for tag in "$@"; do
    tagargs+=(-t "$tag")
  done
  lines=$(image_ids "$e" "$@")
  if [[ $(grep -c . <<<"$lines") != "$#" ]] ||
    [[ $(awk '{ print $2 }' <<<"$lines" | sort -u) != "$hash" ]]; then
    need=1
  elif [[ $(awk '{ print $1 }' <<<"$lines" | sort -u | grep -c .) != 1 ]]; then
    log "$e: $* are not one image any more (something re-tagged them); rebuilding"
    need=1
  fi
  [[ $need == 1 ]] || return 0
  if [[ -z ${CONTEXT_MADE[$name]:-} ]]; then
    make_context "$name"
    CONTEXT_MADE[$name]=1
  fi
  log "$e: building $name ($*)"
  CHANGED[$e]=1
  # --network none: there is no bridge network on these engines.
  if ! dk "$e" build --network none --force-rm --label "shipit.rig.inputs=$hash" \
    "${tagargs[@]}" "$RIG/build/$name" >"$d/build-$name.log" 2>&1; then
    die "$e: building $name failed:
$(tail -n 20 "$d/build-$name.log")"
  fi
  # A rebuild leaves the previous image untagged; drop such leftovers of ours.
  dk "$e" image prune -f --filter "label=shipit.rig.inputs" >/dev/null 2>&1 || true
}

# run_check ENGINE IMAGE EXPECTED: the image runs and prints exactly EXPECTED.
run_check() {
  local e=$1 image=$2 want=$3 got
  got=$(dk "$e" run --rm --network none "$image" 2>&1) ||
    die "$e: docker run $image failed: $got"
  [[ $got == "$want" ]] || die "$e: docker run $image printed '$got', expected '$want'"
}

ensure_images() {
  local e
  for e in "${ENGINES[@]}"; do
    build_image "$e" rosie rosie:latest rosie:test
    build_image "$e" layered layered:latest
  done
  # Prove the runtime (containerd, shim, runc) works, not just the API, on each
  # engine started or built on in this run, in parallel. Not on a warm `up`
  # where nothing changed: it stays fast, and it does not race with tests that
  # are removing and re-loading these very images at that moment.
  local pids=() p
  for e in "${ENGINES[@]}"; do
    [[ -n ${CHANGED[$e]:-} ]] || continue
    (run_check "$e" rosie:latest "Hello, World!" && run_check "$e" layered:latest "layered ok") &
    pids+=($!)
  done
  for p in "${pids[@]}"; do
    wait "$p" || die "a smoke test failed (see above)"
  done
}

# ---------------------------------------------------------------- ssh

# Users outside the group that may open the engines' sockets, both reaching
# $ACCESS_ENGINE: one with passwordless sudo for docker, one with neither.
ACCESS_ENGINE=d26
ACCESS_USERS=(rig-sudo rig-nosudo)
SUDOERS=/etc/sudoers.d/shipit-rig

ensure_users() {
  getent group "$GROUP" >/dev/null || groupadd --system "$GROUP"
  local e u home
  for u in "${ENGINES[@]/#/rig-}" "${ACCESS_USERS[@]}"; do
    if ! id "$u" >/dev/null 2>&1; then
      log "creating user $u"
      useradd --create-home --shell /bin/bash "$u"
    fi
    if [[ $u == rig-d* ]]; then
      id -nG "$u" | tr ' ' '\n' | grep -qx "$GROUP" || usermod -aG "$GROUP" "$u"
    elif id -nG "$u" | tr ' ' '\n' | grep -qx "$GROUP"; then
      gpasswd -d "$u" "$GROUP" >/dev/null
    fi
    # sshd refuses a locked account ("!" in shadow); "*" = no password login
    # but not locked.
    [[ "$(getent shadow "$u" | cut -d: -f2)" == "*" ]] || usermod -p '*' "$u"
    home=$(getent passwd "$u" | cut -d: -f6)
    mkdir -p "$home/.ssh"
    # sshd's StrictModes wants the user (or root) to own these, not writable
    # by others. The rig's own dir is under /var/tmp (mode 1777), which
    # StrictModes would reject, hence the keys live in the home directory.
    write_if_changed "$home/$AUTH_KEYS" "$(cat "$SSH/id_ed25519.pub")" || true
    chown -R "$u:" "$home/.ssh"
    chmod 700 "$home/.ssh"
    chmod 600 "$home/$AUTH_KEYS"
  done
  local rule="# Written by integration/rig.sh: rig-sudo may run docker as root, without a password.
rig-sudo ALL=(root) NOPASSWD: /usr/bin/docker"
  if write_if_changed "$SUDOERS" "$rule"; then
    chmod 440 "$SUDOERS"
    visudo -cf "$SUDOERS" >/dev/null || die "visudo rejects $SUDOERS"
  fi
}

ensure_sshd() {
  local e conf=$SSH/sshd_config
  local cfg
  cfg="$(sshd_config_head "sshd for the shipit rig (written by integration/rig.sh)" \
    "$SSH_HOST:$SSH_PORT" "$SSH/sshd.pid" "${ENGINES[*]/#/rig-} ${ACCESS_USERS[*]}")
Subsystem sftp internal-sftp
"
  for e in "${ENGINES[@]}"; do
    # Only the first SetEnv that applies is used, so DOCKER_HOST and PATH go
    # on one line. PATH puts Debian's docker CLI (has 'system dial-stdio')
    # first, whatever else is in /usr/local/bin.
    cfg+="
Match User rig-$e
  SetEnv DOCKER_HOST=unix://$(engine_sock "$e") PATH=/usr/bin:/bin:/usr/sbin:/sbin
"
  done
  local u
  for u in "${ACCESS_USERS[@]}"; do
    cfg+="
Match User $u
  SetEnv DOCKER_HOST=unix://$(engine_sock "$ACCESS_ENGINE") PATH=/usr/bin:/bin:/usr/sbin:/sbin
"
  done
  local changed=0
  write_if_changed "$conf" "$cfg" && changed=1
  # Privilege separation directory; normally created by the service unit.
  run_sshd "$conf" "$SSH/sshd.pid" "$SSH/sshd.log" "$changed" "$SSH_HOST:$SSH_PORT"
}

write_ssh_client_files() {
  local e hosts="" t
  for t in ed25519 rsa; do
    hosts+="[$SSH_HOST]:$SSH_PORT $(cut -d' ' -f1,2 "$SSH/ssh_host_${t}_key.pub")
"
  done
  write_if_changed "$SSH/known_hosts" "${hosts%$'\n'}" || true
  local cfg="# OpenSSH client config for the shipit rig (written by integration/rig.sh).
# Use: ssh -F $SSH/config rig-d26 docker version
"
  for e in "${ENGINES[@]/#/rig-}" "${ACCESS_USERS[@]}"; do
    cfg+="$(ssh_host_block "$e" "$SSH_HOST" "$SSH_PORT" "$e" "$SSH/id_ed25519" "$SSH/known_hosts")
"
  done
  write_if_changed "$SSH/config" "$cfg" || true
  chmod 644 "$SSH/config" "$SSH/known_hosts"
}

rig_ssh() { ssh -F "$SSH/config" -o ConnectTimeout=10 "$@"; }

# Over ssh, user rig-dXX's `docker version` must reach engine dXX.
check_ssh() {
  local e want got
  for e in "${ENGINES[@]}"; do
    want=$(dk "$e" version -f '{{.Server.Version}}')
    got=$(rig_ssh "rig-$e" docker version -f '{{.Server.Version}}' </dev/null 2>&1) ||
      die "ssh rig-$e docker version failed: $got"
    [[ $got == "$want" ]] || die "ssh rig-$e reached server '$got', expected '$want'"
  done
}

# ---------------------------------------------------------------- rig.json

write_rig_json() {
  local e first=1 ver api store zstd drv out
  out="{\"rig_dir\": $(json_str "$RIG"),
 \"engines\": {"
  for e in "${ENGINES[@]}"; do
    # "version" is the upstream one (20.10.24); "server_version" is what the
    # engine reports, with Debian's suffix (20.10.24+dfsg1).
    ver=$(dk "$e" version -f '{{.Server.Version}}')
    # The engine is named after its Docker major version: catch a wrong binary
    # (or a suite that moved on to the next major version) here.
    [[ $ver == "$(engine_family "$e" | cut -c2-)".* ]] ||
      die "$e: runs Docker $ver, expected $(engine_family "$e" | cut -c2-).x (binaries from $(engine_prefix "$e")/usr)"
    api=$(dk "$e" version -f '{{.Server.APIVersion}}')
    drv=$(dk "$e" info -f '{{json .DriverStatus}}')
    store=classic
    [[ $drv == *io.containerd.snapshotter.v1* ]] && store=containerd
    # zstd layers load from Engine 23.0 = API 1.42 on.
    zstd=false
    if ((${api%%.*} > 1 || (${api%%.*} == 1 && ${api#*.} >= 42))); then zstd=true; fi
    [[ $first == 1 ]] || out+=","
    first=0
    out+="
  $(json_str "$e"): {\"socket\": $(json_str "unix://$(engine_sock "$e")"), \"ssh_alias\": $(json_str "rig-$e"), \"ssh_user\": $(json_str "rig-$e"), \"version\": $(json_str "${ver%%+*}"), \"server_version\": $(json_str "$ver"), \"api_version\": $(json_str "$api"), \"store\": \"$store\", \"zstd\": $zstd, \"usr\": $(json_str "$(engine_prefix "$e")/usr")}"
  done
  local fps="" t fp
  for t in ed25519 rsa; do
    fp=$(ssh-keygen -l -E sha256 -f "$SSH/ssh_host_${t}_key.pub" | awk '{print $2}')
    [[ -n $fps ]] && fps+=", "
    case $t in
    ed25519) fps+="\"ssh-ed25519\": $(json_str "$fp")" ;;
    rsa) fps+="\"ssh-rsa\": $(json_str "$fp")" ;;
    esac
  done
  out+="},
 \"tools\": {"
  local t
  for t in skopeo podman crane buildx; do
    [[ -n ${TOOLS[$t]:-} ]] && out+="$(json_str "$t"): $(json_str "${TOOLS[$t]}"), "
  done
  # ctr of each engine's own containerd; dockerd keeps its containers (and, on
  # the containerd store, its images) in the namespace "moby".
  out+="\"ctr\": {"
  first=1
  for e in "${ENGINES[@]}"; do
    [[ $first == 1 ]] || out+=", "
    first=0
    out+="$(json_str "$e"): {\"bin\": $(json_str "$(engine_prefix "$e")/usr/bin/ctr"), \"address\": $(json_str "$(engine_dir "$e")/containerd/containerd.sock"), \"namespace\": \"moby\"}"
  done
  out+="}, \"docker_config\": $(json_str "$DOCKER_CONFIG")},
 \"access\": {\"engine\": \"$ACCESS_ENGINE\", \"sudo\": \"rig-sudo\", \"none\": \"rig-nosudo\"},
 \"ssh\": {\"host\": \"$SSH_HOST\", \"port\": $SSH_PORT, \"config\": $(json_str "$SSH/config"), \"known_hosts\": $(json_str "$SSH/known_hosts"), \"identity\": $(json_str "$SSH/id_ed25519"), \"host_key_fingerprints\": {$fps}},
 \"docker_cli\": $(json_str "$DOCKER")}"
  write_if_changed "$RIG/rig.json" "$out" || true
  chmod 644 "$RIG/rig.json"
}

# ---------------------------------------------------------------- commands

# Unmount every mount at or below path prefix $1, deepest first (so rm never
# crosses into a mount). Only when nothing of the rig runs there any more.
unmount_below() {
  awk -v r="$1" 'index($2, r) == 1 { print $2 }' /proc/self/mounts |
    sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
}

REBUILD=0

cmd_up() {
  local arg e
  for arg in "$@"; do
    case $arg in
    --rebuild) REBUILD=1 ;;
    *) die "up: unknown argument $arg" ;;
    esac
  done
  [[ ${SHIPIT_RIG_REBUILD:-0} == 1 ]] && REBUILD=1
  check_platform
  take_lock "$RIG"
  mkdir -p "$CACHE" "$DOCKER_CONFIG"
  chmod 755 "$RIG"

  ensure_packages
  ensure_suites
  ensure_tools

  ensure_ssh_keys "$SSH" shipit-rig
  ensure_users # needs the client public key

  for e in "${ENGINES[@]}"; do
    engine_config "$e"
    start_containerd "$e"
  done
  for e in "${ENGINES[@]}"; do
    wait_containerd "$e"
    start_dockerd "$e"
  done
  for e in "${ENGINES[@]}"; do
    wait_dockerd "$e"
  done

  ensure_sshd
  write_ssh_client_files

  ensure_images
  check_ssh
  write_rig_json
  # Kubernetes-like nodes (containerd without Docker) and Podman hosts, each
  # behind an sshd of their own.
  bash "$HERE/nodes.sh" up
  SHIPIT_RIG_DIR="$RIG" SHIPIT_RIG_SSH_PORT="$SSH_PORT" bash "$HERE/podman.sh" up
  log "up: $(cmd_status_lines | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
  log "rig description: $RIG/rig.json"
}

cmd_down() {
  local purge=0 arg e d
  for arg in "$@"; do
    case $arg in
    --purge) purge=1 ;;
    *) die "down: unknown argument $arg" ;;
    esac
  done
  if [[ $EUID -ne 0 ]]; then
    echo "rig: must run as root" >&2
    exit 3
  fi
  [[ -d $RIG ]] || return 0
  take_lock "$RIG"
  local side=()
  [[ $purge == 1 ]] && side=(--purge)
  bash "$HERE/nodes.sh" down "${side[@]}"
  SHIPIT_RIG_DIR="$RIG" SHIPIT_RIG_SSH_PORT="$SSH_PORT" bash "$HERE/podman.sh" down "${side[@]}"
  # dockerds first (they stop their containers), in parallel, then their
  # containerds, then sshd.
  local pids=()
  for e in "${ENGINES[@]}"; do
    d=$(engine_dir "$e")
    stop_pid "$d/docker.pid" "$d/docker.sock" 60 &
    pids+=($!)
  done
  wait "${pids[@]}"
  pids=()
  for e in "${ENGINES[@]}"; do
    d=$(engine_dir "$e")
    stop_pid "$d/containerd/containerd.pid" "$d/containerd/config.toml" 30 &
    pids+=($!)
  done
  wait "${pids[@]}"
  stop_pid "$SSH/sshd.pid" "$SSH/sshd_config" 10
  # dockerd bind-mounts its data-root onto itself and leaves that mount behind
  # when it exits; a killed daemon may leave more (overlays, shm).
  unmount_below "$RIG/"
  log "down: stopped"
  if [[ $purge == 1 ]]; then
    for e in "${ENGINES[@]}"; do
      rm -rf "$(engine_dir "$e")"
    done
    rm -rf "$RIG/build" "$SSH" "$RIG/rig.json" "$DOCKER_CONFIG"
    log "down --purge: removed engine data, keys and build contexts (kept $CACHE)"
  fi
}

# One line per component; exit status 0 iff all are up.
cmd_status_lines() {
  local e d rc=0 ver pid
  for e in "${ENGINES[@]}"; do
    d=$(engine_dir "$e")
    if ver=$(timeout 10 "$DOCKER" -H "unix://$(engine_sock "$e")" version -f '{{.Server.Version}}' 2>/dev/null); then
      pid=$(live_pid "$d/docker.pid" "$d/docker.sock" || echo "?")
      echo "$e: up (Docker $ver, pid $pid, unix://$(engine_sock "$e"))"
    else
      echo "$e: down"
      rc=1
    fi
  done
  if pid=$(live_pid "$SSH/sshd.pid" "$SSH/sshd_config") &&
    timeout 15 ssh -F "$SSH/config" -o ConnectTimeout=5 rig-d20 true </dev/null 2>/dev/null; then
    echo "sshd: up (pid $pid, $SSH_HOST:$SSH_PORT)"
  else
    echo "sshd: down"
    rc=1
  fi
  return $rc
}

cmd_status() {
  cmd_status_lines
}

main() {
  local cmd=${1:-}
  [[ $# -gt 0 ]] && shift
  case $cmd in
  up) cmd_up "$@" ;;
  down) cmd_down "$@" ;;
  status) cmd_status "$@" ;;
  *)
    echo "usage: $0 up [--rebuild] | down [--purge] | status" >&2
    exit 2
    ;;
  esac
}

# Sourcing the file (for debugging a single step) defines the functions only.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  main "$@"
fi
