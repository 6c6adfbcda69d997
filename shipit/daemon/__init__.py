"""The Docker engine, as a source and as a target: connect, probe what it can load, save
and load streams, what it holds (the delta), staged loads and checking a landing.

    with DockerTarget.open("rig-d26", Connect()) as target:
        print(target.capabilities)

Importing this package loads the Docker SDK, and paramiko only when an engine is reached
over SSH (shipit.daemon.channels); archive commands load neither.
"""

import sys


def _import_sdk_without_paramiko() -> None:
    """Import the Docker SDK without the paramiko it imports (about 0.15 s) for its own
    ssh:// clients, which shipit never asks for: shipit.ssh is its SSH, and loads
    paramiko when an engine is reached over SSH. So a ship from a local engine asks for
    its save that much sooner. (The SDK then refuses ssh:// URLs in this process, with
    "Install paramiko package to enable ssh:// support".)"""
    if "docker" in sys.modules or "paramiko" in sys.modules:
        return
    sys.modules["paramiko"] = None  # type: ignore[assignment]  # `import paramiko` fails
    try:
        import docker  # noqa: F401
    finally:
        del sys.modules["paramiko"]


_import_sdk_without_paramiko()

# After the SDK's import above:
from shipit.daemon.address import Address, parse_address  # noqa: E402
from shipit.daemon.endpoint import Endpoint, resolve_endpoint  # noqa: E402
from shipit.daemon.engine import (  # noqa: E402
    EngineInfo,
    image_inspect,
    load_stream,
    probe,
    remove_repository,
    save_stream,
)

__all__ = [
    "Address",
    "Endpoint",
    "EngineInfo",
    "image_inspect",
    "load_stream",
    "parse_address",
    "probe",
    "remove_repository",
    "resolve_endpoint",
    "save_stream",
]
