"""Hostile and broken archives (tests/unit/hostile_corpus.py) against inspect, verify and
convert: the CLI as a user runs it, and the library.

Every case must end in exit code 2 with one line on stderr that names the problem, no
traceback, nothing at the output path, no ``.partial`` file beside it, and nothing left in
the temp folder (``SHIPIT_TMPDIR``) or the working directory. Spool files are anonymous
(O_TMPFILE), so the library tests also check that none is still open.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import hostile_corpus
import pytest
from hostile_corpus import ACCEPTED, ACCEPTED_BUT_REFUSED, MAX_LAYER, Case
from imagefactory import validate

from shipit import api
from shipit.compression import Codec
from shipit.errors import BadInput, ShipitError

CASES = hostile_corpus.by_name()
COMMANDS = ("inspect", "verify", "convert")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Callable[[Case], Path]:
    """Writes a case's archive once per session and returns its path."""
    return hostile_corpus.writer(tmp_path_factory.mktemp("corpus"))


def test_corpus_is_large_and_distinct() -> None:
    assert len(CASES) >= 30
    for case in CASES.values():
        re.compile(case.expect)


# The CLI ------------------------------------------------------------------------------


def _folders(base: Path) -> dict[str, Path]:
    out = {name: base / name for name in ("tmp", "out", "cwd")}
    for folder in out.values():
        folder.mkdir(parents=True)
    return out


def _start(command: str, archive: Path, case: Case, work: dict[str, Path]) -> subprocess.Popen:
    args = [sys.executable, "-m", "shipit", command, str(archive)]
    if command == "convert":
        args += ["-o", str(work["out"] / "out.tar"), "--compression", case.codec or "zstd"]
    env = {
        **os.environ,
        "SHIPIT_TMPDIR": str(work["tmp"]),
        "TMPDIR": str(work["tmp"]),  # anything else that makes a temp file lands there too
        "SHIPIT_MAX_LAYER_SIZE": str(MAX_LAYER),
        "PYTHONPATH": str(REPO),
    }
    return subprocess.Popen(
        args,
        cwd=work["cwd"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def assert_refused(command: str, rc: int, out: str, err: str, case: Case) -> None:
    where = f"{command} {case.name}: rc={rc} stderr={err!r}"
    assert "Traceback" not in err, where
    assert rc == 2, where
    assert out == "", where
    lines = err.splitlines()
    assert len(lines) == 1 and err.endswith("\n"), where
    assert lines[0].startswith("shipit: error: "), where
    assert re.search(case.expect, lines[0]), f"{where} does not match {case.expect!r}"


def assert_clean(command: str, work: dict[str, Path]) -> None:
    for name, folder in work.items():
        assert sorted(os.listdir(folder)) == [], f"{command} left files in {name}/"


@pytest.mark.parametrize("name", CASES)
def test_cli_refuses(name: str, corpus, tmp_path: Path) -> None:
    case = CASES[name]
    archive = corpus(case)
    work = {cmd: _folders(tmp_path / cmd) for cmd in COMMANDS}
    running = {cmd: _start(cmd, archive, case, work[cmd]) for cmd in COMMANDS}
    for command, proc in running.items():
        out, err = proc.communicate(timeout=60)
        if command == "inspect" and case.inside_layer and proc.returncode == 0:
            # inspect checks digests, not what a layer decompresses to (verify does).
            assert err == "", err
        else:
            assert_refused(command, proc.returncode, out, err, case)
        assert_clean(command, work[command])
    beside = set(os.listdir(archive.parent)) - {f"{c}.tar" for c in CASES}
    assert beside == set(), "something was written beside the input"


def test_cli_bad_layer_limit_is_one_line(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    archive.write_bytes(ACCEPTED["containerd-gzip"]())
    env = {**os.environ, "SHIPIT_MAX_LAYER_SIZE": "lots", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "shipit", "inspect", str(archive)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        "shipit: error: SHIPIT_MAX_LAYER_SIZE must be a positive number of bytes, not 'lots'\n"
    )


# The library --------------------------------------------------------------------------


def _open_spools(folder: Path) -> list[str]:
    """Files under ``folder`` this process still has open (anonymous spools included)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def _no_reader_threads() -> bool:
    return not any(t.name == "shipit-reader" and t.is_alive() for t in threading.enumerate())


@pytest.fixture
def work(tmp_path: Path, monkeypatch) -> dict[str, Path]:
    folders = _folders(tmp_path)
    monkeypatch.setenv("SHIPIT_TMPDIR", str(folders["tmp"]))
    monkeypatch.setenv("SHIPIT_MAX_LAYER_SIZE", str(MAX_LAYER))
    monkeypatch.chdir(folders["cwd"])
    return folders


def _raises_bad_input(case: Case, call: Callable[[], object]) -> None:
    # Any other exception type propagates and fails the test with its traceback.
    with pytest.raises(BadInput) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and "\r" not in message, message
    assert re.search(case.expect, message), f"{message!r} does not match {case.expect!r}"


@pytest.mark.parametrize("name", CASES)
def test_library_raises_bad_input(name: str, corpus, work: dict[str, Path]) -> None:
    case = CASES[name]
    archive = str(corpus(case))
    out = work["out"] / "out.tar"
    if case.inside_layer:
        try:
            api.inspect(archive)
        except ShipitError as exc:
            assert isinstance(exc, BadInput), repr(exc)
    else:
        _raises_bad_input(case, lambda: api.inspect(archive))
    _raises_bad_input(case, lambda: api.verify(archive))
    codec = Codec(case.codec or "zstd", threads=1)
    _raises_bad_input(case, lambda: api.convert(archive, str(out), codec))
    assert not out.exists()
    assert_clean("library", work)
    assert _open_spools(work["tmp"]) == []
    assert _no_reader_threads()


def test_failed_convert_keeps_an_existing_output(corpus, work: dict[str, Path]) -> None:
    out = work["out"] / "out.tar"
    out.write_bytes(b"the previous archive")
    case = CASES["truncated-tar-mid-blob"]
    _raises_bad_input(case, lambda: api.convert(str(corpus(case)), str(out), Codec("zstd")))
    assert out.read_bytes() == b"the previous archive"
    assert os.listdir(work["out"]) == ["out.tar"]


VALID = {
    **{name: pytest.param(build, id=name) for name, build in ACCEPTED.items()},
    **{
        name: pytest.param(
            build, id=name, marks=pytest.mark.xfail(strict=True, raises=BadInput, reason=why)
        )
        for name, (build, why) in ACCEPTED_BUT_REFUSED.items()
    },
}


@pytest.mark.parametrize("build", VALID.values())
def test_odd_but_valid_archives_are_accepted(
    build: Callable[[], bytes], work: dict[str, Path]
) -> None:
    archive = work["cwd"] / "in.tar"
    archive.write_bytes(build())
    api.verify(str(archive))
    out = work["out"] / "out.tar"
    api.convert(str(archive), str(out), Codec("zstd", threads=1))
    validate(out.read_bytes())
    assert os.listdir(work["tmp"]) == []
