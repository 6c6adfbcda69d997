# Shell functions shared by the integration rig's scripts (rig.sh, nodes.sh,
# podman.sh, netns.sh, check-debian13.sh). Sourced, not run. A script sets ME,
# the name its messages start with, and then sources it:
#
#   ME=rig
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# It checks ME and defines DIE_TAG and functions, nothing else, so sourcing it
# is safe under set -euo pipefail.
# shellcheck shell=bash

: "${ME:?must be set before sourcing lib.sh}"

# What die writes between "$ME: " and the message. netns.sh sets it empty: its
# errors have never said "error:".
DIE_TAG='error: '

log() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() {
  printf '%s: %s%s\n' "$ME" "$DIE_TAG" "$*" >&2
  exit 1
}

# ---------------------------------------------------------------- processes

# Print the PID in pidfile $1 if that process is alive and its command line
# contains $2 (guards against a stale pidfile whose PID got reused).
live_pid() {
  local pidfile=$1 pattern=$2 pid
  # (The daemon may delete its pidfile at any moment while exiting.)
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  pid_matches "$pid" "$pattern" || return 1
  echo "$pid"
}

# Is process $1 alive with $2 in its command line? A zombie has an empty
# cmdline, so it counts as dead.
pid_matches() {
  [[ $1 =~ ^[0-9]+$ ]] || return 1
  { tr '\0' ' ' <"/proc/$1/cmdline"; } 2>/dev/null | grep -qF -- "$2"
}

# Stop the process in pidfile $1 (if alive and matching $2): TERM, wait up to
# $3 seconds, then KILL and wait up to 5 s more. Removes the pidfile.
stop_pid() {
  local pidfile=$1 pattern=$2 timeout=${3:-30} pid i
  if pid=$(live_pid "$pidfile" "$pattern"); then
    kill -TERM "$pid" 2>/dev/null || true
    # Watch the PID itself, not the pidfile, which dockerd deletes itself
    # while shutting down.
    for ((i = 0; i < timeout * 10; i++)); do
      pid_matches "$pid" "$pattern" || break
      sleep 0.1
    done
    if pid_matches "$pid" "$pattern"; then
      log "pid $pid ($pattern) ignored SIGTERM for ${timeout}s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do
        pid_matches "$pid" "$pattern" || break
        sleep 0.1
      done
    fi
  fi
  rm -f "$pidfile"
}

# spawn LOG CMD...: start a daemon in the background, in its own session (so it
# outlives this script's process group), stdin from /dev/null, output to LOG,
# and with no other inherited fds: an inherited lock fd would keep the lock
# (see take_lock) held forever, an inherited pipe would keep a caller like
# `rig.sh up | tee` waiting. setsid is not a group leader here, so it execs
# without forking and $! is the daemon's PID.
spawn() {
  local log=$1
  shift
  (
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
      fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-"; fi
    done
    exec setsid "$@" </dev/null >>"$log" 2>&1
  ) &
}

# take_lock DIR: serialize concurrent runs of this script on DIR/.lock (several
# test sessions may call `up`). Daemons must not inherit fd 9 (see spawn), or
# they would hold the lock.
take_lock() {
  local dir=$1
  mkdir -p "$dir"
  exec 9>"$dir/.lock"
  flock -w 900 9 || die "another $ME.sh holds $dir/.lock for 15 minutes"
}

# ---------------------------------------------------------------- files

# Write $2 to file $1 only if the content differs; exit status 0 if changed.
# The new file replaces the old one whole (a reader never sees half of it).
write_if_changed() {
  local file=$1 content
  # Compare without trailing newlines, as $(<file) strips them.
  content=$(printf '%s' "$2")
  if [[ -f $file ]] && [[ "$(<"$file")" == "$content" ]]; then
    return 1
  fi
  printf '%s\n' "$content" >"$file.tmp"
  mv -f "$file.tmp" "$file"
}

# $1 as a JSON string. Control characters are escaped too, so any value gives
# valid JSON; other characters, UTF-8 included, are written as they are. (Pure
# bash: rig.json alone takes dozens of these, and python3 need not be there.)
json_str() {
  local s=$1 out="" c i
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  if [[ $s == *[[:cntrl:]]* ]]; then
    for ((i = 0; i < ${#s}; i++)); do
      c=${s:i:1}
      case $c in
      $'\n') out+='\n' ;;
      $'\t') out+='\t' ;;
      $'\r') out+='\r' ;;
      $'\b') out+='\b' ;;
      $'\f') out+='\f' ;;
      [[:cntrl:]])
        printf -v c '\\u%04x' "'$c"
        out+=$c
        ;;
      *) out+=$c ;;
      esac
    done
    s=$out
  fi
  printf '"%s"' "$s"
}

# ---------------------------------------------------------------- apt, ssh

# debian_mirror CODENAME: the Debian mirror this machine already uses for its
# own release CODENAME (from its apt sources), so the other suites' sources
# point at the same place.
debian_mirror() {
  local want=$1 f uri=""
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    # deb822 stanzas are separated by blank lines; pick one whose Suites
    # include plain $want and take its first URI.
    uri=$(awk -v want="$want" 'BEGIN { RS = ""; FS = "\n" }
      { uris = ""; suites = ""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); uris = $i }
          if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); suites = " " $i " " }
        }
        if (index(suites, " " want " ") && uris != "") { split(uris, u, " "); print u[1]; exit }
      }' "$f")
    if [[ -n $uri ]]; then break; fi
  done
  if [[ -z $uri ]]; then
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
      [[ -r $f ]] || continue
      uri=$(awk -v want="$want" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                   if ($(i + 1) == want) { print $i; exit } }' "$f")
      if [[ -n $uri ]]; then break; fi
    done
  fi
  shopt -u nullglob
  [[ -n $uri ]] || die "cannot find the Debian $want mirror in /etc/apt sources"
  echo "${uri%/}"
}

# ensure_ssh_keys DIR NAME: an sshd's host keys (ed25519, rsa) and a client key
# in DIR, made once and kept (clients pin the host keys); their comments are
# NAME-host and NAME-client.
ensure_ssh_keys() {
  local dir=$1 name=$2 t
  mkdir -p "$dir"
  chmod 755 "$dir"
  for t in ed25519 rsa; do
    [[ -s $dir/ssh_host_${t}_key ]] ||
      ssh-keygen -q -t "$t" -N '' -C "$name-host" -f "$dir/ssh_host_${t}_key"
  done
  [[ -s $dir/id_ed25519 ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "$name-client" -f "$dir/id_ed25519"
  chmod 600 "$dir"/ssh_host_*_key "$dir/id_ed25519"
}

# sshd_config_head TITLE LISTEN PIDFILE ALLOW: what every rig sshd's config shares (the
# host keys in $SSH, public keys from $AUTH_KEYS only, no PAM, no root, many connections
# at once), listening on LISTEN (host:port) for the users ALLOW; its Match blocks follow.
sshd_config_head() {
  cat <<EOF
# $1
ListenAddress $2
HostKey $SSH/ssh_host_ed25519_key
HostKey $SSH/ssh_host_rsa_key
PidFile $3
# No PAM: a plain sshd without systemd/logind; users have '*' as password.
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $4
AuthorizedKeysFile $AUTH_KEYS
PrintMotd no
X11Forwarding no
# Tests may open many connections at once.
MaxStartups 100:30:200
MaxSessions 100
EOF
}

# ssh_host_block ALIAS HOST PORT USER IDENTITY KNOWN_HOSTS: an OpenSSH client Host block,
# after a blank line, for one rig user: its key only, the host keys pinned in KNOWN_HOSTS
# only, never a prompt.
ssh_host_block() {
  printf '%s\n' "" "Host $1" "  HostName $2" "  Port $3" "  User $4" "  IdentityFile $5" \
    "  IdentitiesOnly yes" "  UserKnownHostsFile $6" "  GlobalKnownHostsFile /dev/null" \
    "  StrictHostKeyChecking yes" "  UpdateHostKeys no" "  BatchMode yes" \
    "  PasswordAuthentication no"
}

# run_sshd CONF PIDFILE LOG CHANGED WHERE [PREFIX]: the sshd of config CONF (PidFile
# PIDFILE, log LOG) running: reloaded when CHANGED is 1 (CONF was just rewritten),
# started when it is not running; returns once its PidFile names a live sshd. WHERE
# (host:port) and PREFIX ("c17: ") are for the messages.
run_sshd() {
  local conf=$1 pidfile=$2 log_file=$3 changed=$4 where=$5 pre=${6:-} pid i
  mkdir -p /run/sshd
  chmod 755 /run/sshd
  /usr/sbin/sshd -t -f "$conf" || die "${pre}sshd rejects $conf"
  if pid=$(live_pid "$pidfile" "$conf"); then
    if [[ $changed == 1 ]]; then
      log "${pre}sshd: config changed, reloading"
      kill -HUP "$pid"
      sleep 0.5
    fi
  else
    log "${pre}starting sshd on $where"
    rm -f "$pidfile"
    # sshd daemonizes itself and writes the PidFile. Daemons must not inherit fd 9 (the
    # lock, see take_lock).
    /usr/sbin/sshd -f "$conf" -E "$log_file" 9>&- </dev/null ||
      die "${pre}sshd failed to start; last log lines:
$(tail -n 20 "$log_file")"
  fi
  for ((i = 0; i < 100; i++)); do
    live_pid "$pidfile" "$conf" >/dev/null && return 0
    sleep 0.1
  done
  die "${pre}sshd did not come up; last log lines:
$(tail -n 20 "$log_file")"
}
