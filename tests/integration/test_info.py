"""`shipit info` and the daemon library against the rig's real engines, by socket and SSH."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid

import pytest
from engines import said

from shipit.daemon import image_inspect, load_stream, probe, resolve_endpoint, save_stream
from shipit.errors import ConnectionFailed, EngineError, ImageNotFound

pytestmark = pytest.mark.integration

EXPECTED = {  # engine: (image store, loads zstd, needs manifest.json, API shipit pins)
    "d20": ("classic", False, True, "1.41"),
    "d26": ("classic", True, True, "1.45"),
    "d26c": ("containerd", True, False, "1.45"),
    "d28": ("classic", True, True, "1.45"),  # Engine 28.5 answers 1.51; the SDK tops at 1.45
    "d28c": ("containerd", True, False, "1.45"),
}
ENGINE_VIA = [(e, via) for e in EXPECTED for via in ("socket", "ssh")]


def target_of(rig, engine: str, via: str) -> str:
    info = rig["engines"][engine]
    return info["socket"] if via == "socket" else info["ssh_alias"]


@pytest.mark.parametrize(("engine", "via"), ENGINE_VIA)
def test_cli_info_json(rig, ssh_config, run_shipit, engine, via):
    done = run_shipit(
        "info", "--json", "--measure-link", "--ssh-config", ssh_config, target_of(rig, engine, via)
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    store, zstd, manifest_json, _ = EXPECTED[engine]
    assert (got["image_store"], got["loads_zstd"], got["needs_manifest_json"]) == (
        store,
        zstd,
        manifest_json,
    )
    assert got["engine_version"].startswith(rig["engines"][engine]["version"])
    assert got["name"] == target_of(rig, engine, via)
    assert got["os"] == "linux" and got["arch"]
    if via == "socket":
        assert got["link_mb_s"] == "local"
    else:  # measured through the rig's real sshd, which discards the IGNORE packets
        assert isinstance(got["link_mb_s"], float) and got["link_mb_s"] > 1


@pytest.mark.parametrize(("engine", "via"), ENGINE_VIA)
def test_library_probe(rig, ssh_config, engine, via):
    with resolve_endpoint(target_of(rig, engine, via), ssh_config=ssh_config) as endpoint:
        info = probe(endpoint)
        assert endpoint.api.api_version == EXPECTED[engine][3]  # negotiated, then pinned
    store, zstd, manifest_json, _ = EXPECTED[engine]
    assert (info.image_store, info.loads_zstd, info.needs_manifest_json) == (
        store,
        zstd,
        manifest_json,
    )
    assert info.to_dict()["image_store"] == store


def test_cli_info_text(rig, ssh_config, run_shipit):
    done = run_shipit("info", "--measure-link", "--ssh-config", ssh_config, "rig-d20")
    assert done.returncode == 0, done.stderr
    lines = dict(
        line.split(None, 1)
        for line in done.stdout.replace("image store", "store")
        .replace("zstd layers", "zstd")
        .splitlines()
    )
    assert lines["engine"].strip() == "rig-d20"
    assert lines["store"].startswith("classic")
    assert lines["zstd"].startswith("no")
    assert lines["upload"].startswith("zstd, undone by the host's zstd")  # the rig has zstd
    assert lines["manifest.json"].strip() == "needed"
    assert lines["link"].strip().endswith("MB/s")


def test_link_measurement_leaves_the_session_usable(rig, ssh_config):
    with resolve_endpoint("rig-d26", ssh_config=ssh_config) as endpoint:
        speeds = [endpoint.link_speed() for _ in range(3)]
        assert all(s is not None and s > 1e6 for s in speeds)
        assert probe(endpoint).image_store == "classic"  # the engine still answers


def test_ssh_config_from_environment(rig, ssh_config, monkeypatch):
    monkeypatch.setenv("SHIPIT_SSH_CONFIG", str(ssh_config))
    with resolve_endpoint("rig-d26") as endpoint:
        assert probe(endpoint).engine_version.startswith("26.")


def test_ssh_url_with_explicit_port_and_user(rig, ssh_config):
    url = f"ssh://rig-d26c@{rig['ssh']['host']}:{rig['ssh']['port']}"
    # The rig's config has entries only for its aliases, so describe the bare address here.
    config = ssh_config.parent / "url_config"
    config.write_text(
        f"Host {rig['ssh']['host']}\n"
        f"  IdentityFile {rig['ssh']['identity']}\n"
        f"  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {ssh_config.parent / 'known_hosts'}\n"
        f"  Port 22\n"  # the URL's port must win over this
    )
    with resolve_endpoint(url, ssh_config=config) as endpoint:
        assert probe(endpoint).image_store == "containerd"


def test_unreachable_socket_is_connection_failed(tmp_path, run_shipit):
    done = run_shipit("info", f"unix://{tmp_path}/nothing.sock")
    assert done.returncode == ConnectionFailed.exit_code
    assert said(done.stderr)[0].startswith("shipit: error: ") and "Traceback" not in done.stderr
    assert "no such file" in done.stderr


def test_save_over_socket_then_load_over_ssh(rig, ssh_config):
    tag = f"shipit-test/rosie:{uuid.uuid4().hex[:12]}"
    with (
        resolve_endpoint(rig["engines"]["d20"]["socket"]) as source,
        resolve_endpoint("rig-d26c", ssh_config=ssh_config) as target,
    ):
        source.api.tag("rosie:latest", *tag.split(":"))
        try:
            assert image_inspect(target, tag) is None
            loaded = load_stream(target, save_stream(source, [tag]))
            assert any(tag in line for line in loaded), loaded
            landed = image_inspect(target, tag)
            assert landed is not None
            want = image_inspect(source, "rosie:latest")
            assert want is not None
            assert landed["RootFS"]["Layers"] == want["RootFS"]["Layers"]
        finally:
            source.api.remove_image(tag)
            if image_inspect(target, tag):
                target.api.remove_image(tag)


def test_save_of_several_names_is_one_archive(rig):
    with resolve_endpoint(rig["engines"]["d26"]["socket"]) as source:
        data = b"".join(save_stream(source, ["rosie:latest", "rosie:test", "layered:latest"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
    tags = {t for entry in manifest for t in entry["RepoTags"]}
    assert {"rosie:latest", "rosie:test", "layered:latest"} <= tags


@pytest.mark.parametrize("via", ["socket", "ssh"])
def test_save_of_a_missing_image(rig, ssh_config, via):
    with (
        resolve_endpoint(target_of(rig, "d20", via), ssh_config=ssh_config) as source,
        pytest.raises(ImageNotFound, match="no-such-image"),
    ):
        save_stream(source, ["no-such-image:nope"])


@pytest.mark.parametrize(
    ("engine", "via"),
    [("d20", "socket"), ("d26", "ssh"), ("d26c", "ssh"), ("d28", "socket"), ("d28c", "ssh")],
)
def test_load_of_garbage_is_an_engine_error(rig, ssh_config, engine, via):
    garbage = [b"this is not a tar archive\n" * 1000]
    with resolve_endpoint(target_of(rig, engine, via), ssh_config=ssh_config) as target:
        with pytest.raises(EngineError) as caught:
            load_stream(target, garbage)
        assert str(caught.value).startswith(f"loading into {target.name}: ")


def test_image_inspect(rig):
    with resolve_endpoint(rig["engines"]["d26c"]["socket"]) as endpoint:
        assert image_inspect(endpoint, "rosie:latest")["Id"].startswith("sha256:")
        assert image_inspect(endpoint, "no-such-image:nope") is None


def add_context(config_dir, name: str, host: str) -> None:
    digest = hashlib.sha256(name.encode()).hexdigest()
    meta = config_dir / "contexts" / "meta" / digest
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": {"Host": host}}})
    )


def test_docker_contexts_and_docker_host(rig, ssh_config, tmp_path, monkeypatch, run_shipit):
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.delenv("DOCKER_CONTEXT", raising=False)
    add_context(tmp_path, "staging", "ssh://rig-d26c")  # an ssh alias, read from --ssh-config
    add_context(tmp_path, "old", rig["engines"]["d20"]["socket"])
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "old"}))

    def store_of(*target: str) -> tuple[str, str]:
        done = run_shipit("info", "--json", "--ssh-config", ssh_config, *target)
        assert done.returncode == 0, done.stderr
        got = json.loads(done.stdout)
        return got["name"], got["image_store"]

    assert store_of("staging") == ("staging", "containerd")
    assert store_of() == ("old", "classic")  # the current context
    monkeypatch.setenv("DOCKER_HOST", rig["engines"]["d26"]["socket"])
    assert store_of() == (rig["engines"]["d26"]["socket"], "classic")
    monkeypatch.setenv("DOCKER_CONTEXT", "staging")
    assert store_of() == ("staging", "containerd")


def test_info_measures_the_link_only_when_asked(rig, ssh_config, run_shipit):
    done = run_shipit("info", "--json", "--ssh-config", ssh_config, "rig-d26")
    assert done.returncode == 0, done.stderr
    assert "link_mb_s" not in json.loads(done.stdout)
