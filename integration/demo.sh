#!/usr/bin/env bash
# The main job on the local rig: ship rosie from Engine 20.10 to the containerd-store
# Engine 26 over SSH (an alias of the rig's ssh config), ship it again (nothing to send),
# then run it there.
#
# It ships an image of its own, rosie:demo (rosie with a label of this run, so no target
# has it yet), and removes it at the end: the tests rely on rosie:latest and rosie:test
# being the one image rig.sh built on every engine.
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
# (the legacy builder's deprecation notice is shown only if the build fails)
if ! built=$(printf 'FROM rosie:latest\nLABEL shipit.demo="%s"\n' "$(date -u +%FT%TZ)" |
    DOCKER_BUILDKIT=0 DOCKER_CONFIG="$RIG_DIR/docker-config" \
        docker -H "unix://$RIG_DIR/d20/docker.sock" build -q -t "$DEMO" - 2>&1); then
    printf '%s\n' "$built" >&2
    exit 1
fi

say shipit "$DEMO" --from "unix://$RIG_DIR/d20/docker.sock" --to rig-d26c
"$SHIPIT" "$DEMO" --from "unix://$RIG_DIR/d20/docker.sock" --to rig-d26c

say shipit "$DEMO" --from "unix://$RIG_DIR/d20/docker.sock" --to rig-d26c "  # again"
"$SHIPIT" "$DEMO" --from "unix://$RIG_DIR/d20/docker.sock" --to rig-d26c

say ssh rig-d26c docker run --rm --network none "$DEMO"
rig_ssh rig-d26c docker run --rm --network none "$DEMO"
