#!/usr/bin/env bash
# The main job on the local rig: ship rosie:latest from Engine 20.10 to the containerd-store
# Engine 26 over SSH (an alias of the rig's ssh config), then run it there.
set -euo pipefail
cd "$(dirname "$0")/.."
RIG_DIR="${SHIPIT_RIG_DIR:-/var/tmp/shipit-rig}"
SHIPIT=".venv/bin/shipit"
export SHIPIT_SSH_CONFIG="$RIG_DIR/ssh/config"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

for alias in rig-d20 rig-d26 rig-d26c; do
    say shipit info "$alias"
    "$SHIPIT" info "$alias"
done

# Start from a target that lacks the image, so the whole job is visible.
ssh -F "$SHIPIT_SSH_CONFIG" rig-d26c docker rmi -f rosie:latest >/dev/null 2>&1 || true

say shipit rosie:latest --from unix://$RIG_DIR/d20/docker.sock --to rig-d26c
"$SHIPIT" rosie:latest --from "unix://$RIG_DIR/d20/docker.sock" --to rig-d26c

say ssh rig-d26c docker run --rm --network none rosie:latest
ssh -F "$SHIPIT_SSH_CONFIG" rig-d26c docker run --rm --network none rosie:latest
