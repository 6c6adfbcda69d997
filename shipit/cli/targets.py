"""Help text shared by every command that names an engine."""

TARGET_FORMS = (
    "A URL: unix://PATH, tcp://HOST:PORT, ssh://[USER@]HOST[:PORT]. A docker context name. "
    "Any other name is an SSH destination [USER@]HOST looked up in the ssh config (HostName, "
    "Port, User, IdentityFile, ProxyJump, ...); the remote needs only sshd and the docker CLI."
)
LOCAL_DEFAULT = (
    "Omitted: $DOCKER_CONTEXT, else $DOCKER_HOST, else the current docker context, else "
    "unix:///var/run/docker.sock."
)
TARGET_HELP = f"{LOCAL_DEFAULT} {TARGET_FORMS}"
#: Where images can go but not come from: containerd without Docker.
CONTAINERD_FORMS = (
    "containerd without Docker (a Kubernetes node): ctr://[USER@]HOST[:PORT] with "
    "?namespace= (default k8s.io), &address= (the socket) and &snapshotter=, or an SSH "
    "destination whose host has ctr or k3s but no docker; the remote needs sshd and ctr."
)
