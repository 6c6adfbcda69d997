"""What names a Podman host: ``podman://[user@]host[:port]``. Apart from shipit.podman.target
so that telling an address's kind loads no SSH code."""

SCHEME = "podman://"


def is_podman_address(address: str) -> bool:
    return address.startswith(SCHEME)
