"""Help text shared by every command that names an engine (the forms: docs/shipping.md)."""

TARGET_FORMS = (
    "unix://PATH, tcp://HOST:PORT, ssh://[USER@]HOST[:PORT], a docker context, an ssh host, "
    "or ctr://[USER@]HOST[:PORT] (a containerd node)."
)
SOURCE_HELP = "Engine to save from [default: $DOCKER_HOST or the current docker context]."
TARGET_HELP = "Engine to load into [default: $DOCKER_HOST or the current docker context]."
