"""A containerd store's name that shows the shipped image under another ship's manifest
(the same config, its layers compressed another way) is the image sent; any other
difference is not."""

from __future__ import annotations

import pytest

from shipit.landing import same_config

CONFIG = {
    "created": "2026-12-01T15:46:33.633599519Z",
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Env": ["PATH=/usr/bin"],
        "Cmd": ["/busybox", "echo", "Hello"],
        "Image": "sha256:09d5",  # engines show this blank
        "Labels": {"a": "b"},
    },
}
# What Engine 28's containerd store shows for it (the keys it has; no "Image").
SHOWN = {
    "Created": "2026-12-01T15:46:33.633599519Z",
    "Architecture": "amd64",
    "Os": "linux",
    "Config": {
        "Cmd": ["/busybox", "echo", "Hello"],
        "Entrypoint": None,
        "Env": ["PATH=/usr/bin"],
        "Labels": {"a": "b"},
        "OnBuild": None,
        "User": "",
        "Volumes": None,
        "WorkingDir": "",
    },
}


def test_the_same_config_under_another_manifest_is_the_image():
    assert same_config(SHOWN, CONFIG)
    # the time in another form: fewer fraction digits, an explicit zone
    assert same_config({**SHOWN, "Created": "2026-12-01T15:46:33.6335995190+00:00"}, CONFIG)


@pytest.mark.parametrize(
    "change",
    [
        {"Created": "2026-12-01T15:46:34Z"},
        {"Architecture": "arm64"},
        {"Config": {**SHOWN["Config"], "Cmd": ["/bin/sh"]}},
        {"Config": {**SHOWN["Config"], "Entrypoint": ["/evil"]}},
        {"Config": {**SHOWN["Config"], "Labels": {}}},
    ],
)
def test_another_config_is_not(change):
    assert not same_config({**SHOWN, **change}, CONFIG)


def test_no_created_time_proves_nothing():
    assert not same_config(SHOWN, {**CONFIG, "created": None})
