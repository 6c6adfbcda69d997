"""The Docker engine, as a source and as a target: connect, probe what it can load, save
and load streams, what it holds (the delta), staged loads and checking a landing.

    with DockerTarget.open("rig-d26", Connect()) as target:
        print(target.capabilities)

Importing this package loads the Docker SDK and paramiko; archive commands never do.
"""

from shipit.daemon.address import Address, parse_address
from shipit.daemon.endpoint import Endpoint, resolve_endpoint
from shipit.daemon.engine import (
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
