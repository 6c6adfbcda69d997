"""Docker engines through the Docker SDK: connect, probe what they can load, save and load.

with resolve_endpoint("rig-d26") as engine:
    info = probe(engine)
    load_stream(engine, save_stream(source, ["rosie:latest"]))
"""

from shipit.daemon.endpoint import Endpoint, resolve_endpoint
from shipit.daemon.engine import (
    EngineInfo,
    image_inspect,
    load_stream,
    probe,
    remove_repository,
    save_stream,
)
from shipit.daemon.target import Target, parse_target

__all__ = [
    "Endpoint",
    "EngineInfo",
    "Target",
    "image_inspect",
    "load_stream",
    "parse_target",
    "probe",
    "remove_repository",
    "resolve_endpoint",
    "save_stream",
]
