#!/usr/bin/env bash
# The main job on the local rig: ship rosie from Engine 20.10 to the containerd-store
# Engine 26 over SSH (an alias of the rig's ssh config), then run it there.
#
# It ships a tag of its own, rosie:demo, and removes it at the end: the tests rely on
# rosie:latest and rosie:test being the one image rig.sh built on every engine.
set -euo pipefail
cd "$(dirname "$0")/.."
RIG_DIR="${SHIPIT_RIG_DIR:-/var/tmp/shipit-rig}"
SHIPIT=".venv/bin/shipit"
export SHIPIT_SSH_CONFIG="$RIG_DIR/ssh/config"
DEMO=rosie:demo

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
rig_ssh() { ssh -F "$SHIPIT_SSH_CONFIG" "$@" </dev/null; }
cleanup() {
    rig_ssh rig-d26c docker rmi "$DEMO" >/dev/null 2>&1 || true
    rig_ssh rig-d20 docker rmi "$DEMO" >/dev/null 2>&1 || true
}

for alias in rig-d20 rig-d26 rig-d26c rig-d28 rig-d28c; do
    say shipit info "$alias"
    "$SHIPIT" info "$alias"
done

# Start from a target that lacks the image, so the whole job is visible.
cleanup
trap cleanup EXIT
rig_ssh rig-d20 docker tag rosie:latest "$DEMO"

say shipit "$DEMO" --from "unix://$RIG_DIR/d20/docker.sock" --to rig-d26c
"$SHIPIT" "$DEMO" --from "unix://$RIG_DIR/d20/docker.sock" --to rig-d26c

say ssh rig-d26c docker run --rm --network none "$DEMO"
rig_ssh rig-d26c docker run --rm --network none "$DEMO"
