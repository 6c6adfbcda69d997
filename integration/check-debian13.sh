#!/usr/bin/env bash
# Does the rig come up on Debian 13 (trixie)? On a Debian 12 machine: debootstrap a
# trixie root (once; kept for the next run), enter it in a private mount namespace
# with /proc, /sys (cgroups included), /dev and a fresh /run, and run there
#
#   rig.sh up       (installs trixie's packages inside the root, unpacks bookworm's
#                    20.10 and unstable's 28, starts the five engines and sshd,
#                    builds and runs the test images on each, checks ssh; then the
#                    containerd nodes (1.7 is the system's there) and the Podman
#                    hosts, rootful and rootless)
#   rig.sh status
#   rig.sh down     (and checks it left no mount behind)
#
# with its own rig dir and SSH port, so it never meets the machine's own rigs.
# The daemons run in the host's network namespace: the port must be free.
#
#   bash integration/check-debian13.sh [--ci] [--purge-root]
#
#   --ci           instead, run the whole CI there (`bash .ci/run` in a clone of
#                  this repository's HEAD: make demo, make test, no skips; ~25 min)
#   --purge-root   delete the debootstrapped root afterwards (else the next run
#                  reuses it, with the packages and downloads of this one)
#
# Environment: SHIPIT_DEB13_ROOT (default /var/tmp/shipit-debian13),
# SHIPIT_DEB13_SSH_PORT (default 2240), SHIPIT_DEB13_MIRROR (default: this machine's).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
ROOT=${SHIPIT_DEB13_ROOT:-/var/tmp/shipit-debian13}
PORT=${SHIPIT_DEB13_SSH_PORT:-2240}
SUITE=trixie
PURGE_ROOT=0
CI_RUN=0
for arg in "$@"; do
  case $arg in
  --purge-root) PURGE_ROOT=1 ;;
  --ci) CI_RUN=1 ;;
  *)
    echo "usage: $0 [--ci] [--purge-root]" >&2
    exit 2
    ;;
  esac
done

ME=check-debian13
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, mounts, chroot)"
if [[ $(. /etc/os-release && echo "$VERSION_ID") == 13 ]]; then
  die "this machine is Debian 13 already: run 'bash integration/rig.sh up' itself"
fi

mirror=${SHIPIT_DEB13_MIRROR:-}
if [[ -z $mirror ]]; then
  # The mirror this machine's own release comes from: the one its apt already reaches.
  mirror=$(debian_mirror "$(. /etc/os-release && echo "$VERSION_CODENAME")" 2>/dev/null) ||
    mirror=http://deb.debian.org/debian
fi

if [[ ! -f $ROOT/etc/debian_version ]]; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get install -y -q -o DPkg::Lock::Timeout=600 debootstrap >/dev/null ||
      die "apt-get install debootstrap failed"
  }
  log "debootstrap $SUITE into $ROOT from $mirror"
  mkdir -p "$ROOT"
  debootstrap --variant=minbase "$SUITE" "$ROOT" "$mirror" >"$ROOT.debootstrap.log" 2>&1 ||
    die "debootstrap failed; last lines of $ROOT.debootstrap.log:
$(tail -n 20 "$ROOT.debootstrap.log")"
fi
log "root: $ROOT is Debian $(cat "$ROOT/etc/debian_version")"

# The repository, read-only, at /shipit inside the root; name resolution from here.
mkdir -p "$ROOT/shipit"
cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
# A machine of this kind would reach its mirror with the same apt settings (a proxy;
# no expiry check where the mirror serves a frozen snapshot): carry them over.
apt-config dump | grep -E '^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy) ' \
  >"$ROOT/etc/apt/apt.conf.d/90shipit-check-host" || true
# ... and the same TLS trust and pip settings (a site CA in front of PyPI): local CAs where
# Debian keeps them (they survive a rebuild of the bundle), the bundle itself, pip.conf.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates" "$ROOT/etc/ssl/certs"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  cp -L /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
fi
[[ -f /etc/pip.conf ]] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
# A machine resolves its own name (sudo warns on every call otherwise).
grep -qw "$(hostname)" "$ROOT/etc/hosts" 2>/dev/null ||
  printf '127.0.1.1\t%s\n' "$(hostname)" >>"$ROOT/etc/hosts"

# What runs inside: the rig's up/status/down, or the CI on a clone of HEAD.
if [[ $CI_RUN == 1 ]]; then
  rm -rf "$ROOT/root/shipit-ci"
  git clone -q "$REPO" "$ROOT/root/shipit-ci"
  job='cd /root/shipit-ci && bash .ci/run'
  what="bash .ci/run"
else
  job='
      # down on every path: daemons left running would outlive this namespace
      # (and the next run would find their pidfiles and reuse them)
      trap "bash /shipit/integration/rig.sh down" EXIT
      bash /shipit/integration/rig.sh up
      bash /shipit/integration/rig.sh status
      trap - EXIT
      bash /shipit/integration/rig.sh down
      left=$(grep -c " /var/tmp/shipit-rig-deb13/" /proc/self/mounts || true)
      [ "$left" = 0 ] || { echo "rig.sh down left $left mounts" >&2; exit 1; }'
  what="rig.sh up, status and down"
fi

# Everything below runs in one private mount namespace: the engines' mounts (and the
# bind mounts of /proc, /sys, /dev) vanish with its last process. The root is
# bind-mounted onto itself so that it is a mount point: runc's pivot_root needs that.
start=$SECONDS
rc=0
unshare --mount --propagation private bash -euo pipefail -c '
  root=$1 repo=$2 port=$3
  mount --bind "$root" "$root"
  mount --bind "$repo" "$root/shipit"
  mount -o remount,bind,ro "$root/shipit"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs -o mode=755 tmpfs "$root/run"
  mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
  # pivot_root, not a bare chroot: the kernel refuses a user namespace (rootless
  # Podman) to a process whose root is not its mount namespace'"'"'s root.
  mkdir -p "$root/.host"
  cd "$root"
  pivot_root . .host
  exec chroot . /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb \
    SHIPIT_RIG_DIR=/var/tmp/shipit-rig-deb13 SHIPIT_RIG_SSH_PORT="$port" \
    bash -euo pipefail -c "umount -l /.host; $4"
' check "$ROOT" "$REPO" "$PORT" "$job" || rc=$?
took=$((SECONDS - start))

if [[ $rc == 0 ]]; then
  log "OK: $what on Debian $(cat "$ROOT/etc/debian_version") in ${took}s"
else
  log "FAILED (exit $rc) after ${took}s; logs under $ROOT/var/tmp/shipit-rig-deb13"
fi
if [[ $PURGE_ROOT == 1 ]]; then
  rm -rf --one-file-system "$ROOT" "$ROOT.debootstrap.log"
fi
exit $rc
