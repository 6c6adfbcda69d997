"""The CLI's last line of defence: whatever escapes the library ends as one clear line."""

from __future__ import annotations

import json
import signal

import pytest

import shipit.daemon
import shipit.ssh
from shipit.cli import main


@pytest.fixture(autouse=True)
def _keep_signals():
    # main() installs its own SIGINT/SIGTERM handlers; give pytest its own back.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def test_an_eoferror_is_a_closed_connection_not_a_bare_aborted(monkeypatch, capsys):
    # paramiko raises EOFError on a dead socket; Click would print "Aborted!" and exit 1.
    def closed(*args, **kwargs):
        raise EOFError

    monkeypatch.setattr(shipit.ssh, "connect", closed)  # "somewhere" is an SSH destination
    with pytest.raises(SystemExit) as exited:
        main(["info", "somewhere"])
    assert exited.value.code == 3
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == ["shipit: error: a connection closed unexpectedly"]


def test_a_usage_error_keeps_clicks_message_and_code(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["ship", "--bogus"])
    assert exited.value.code == 2
    assert "No such option: --bogus" in capsys.readouterr().err


def _help(capsys, *args: str) -> list[str]:
    with pytest.raises(SystemExit) as exited:
        main([*args, "--help"])
    assert exited.value.code == 0
    return capsys.readouterr().out.splitlines()


def _option_help_lines(lines: list[str]) -> dict[str, int]:
    """Option → how many lines its help takes in Click's two-column listing."""
    start = lines.index("Options:") + 1
    counts: dict[str, int] = {}
    current = None
    for line in lines[start:]:
        if not line.strip():
            break
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            name_only = "  " not in line.strip()  # the help starts on the next line
            counts[current] = 0 if name_only else 1
        else:
            assert current is not None, line
            counts[current] += 1
    return counts


@pytest.mark.parametrize("command", ["ship", "save", "load", "convert", "info", "install-plugin"])
def test_help_fits_a_screen(capsys, monkeypatch, command):
    monkeypatch.setenv("COLUMNS", "80")
    lines = _help(capsys, command)
    assert len(lines) <= 50, "\n".join(lines)
    assert all(len(line) <= 80 for line in lines)
    counts = _option_help_lines(lines)
    assert "--help" in counts
    too_long = {option: n for option, n in counts.items() if n > 2}
    assert not too_long, "\n".join(lines)


def test_ship_help_names_the_forms_and_the_docs(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    text = " ".join(" ".join(_help(capsys, "ship")).split())
    assert "ssh://[USER@]HOST[:PORT]" in text and "docs/shipping.md" in text
    assert "--compose FILE" in text and "--to TARGET" in text


def test_root_help_lists_every_command_on_one_line(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    lines = _help(capsys)
    listed = lines[lines.index("Commands:") + 1 :]
    names = [line.split()[0] for line in listed if line.strip()]
    assert set(names) == {
        "save",
        "convert",
        "inspect",
        "verify",
        "load",
        "info",
        "ship",
        "install-plugin",
    }
    assert "--install-completion" in " ".join(lines)


def test_quiet_prints_nothing_on_success(tmp_path, capsys):
    from imagefactory import oci_archive, sample_images

    archive = tmp_path / "in.tar"
    archive.write_bytes(oci_archive(sample_images()))
    out = tmp_path / "out.tar"
    with pytest.raises(SystemExit) as exited:
        main(["convert", str(archive), "-o", str(out), "-q"])
    assert exited.value.code in (0, None)
    assert capsys.readouterr() == ("", "")
    assert out.stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["verify", str(out), "-q"])
    assert capsys.readouterr() == ("", "")
    # Without -q the summary line; -q --json still prints the JSON asked for.
    with pytest.raises(SystemExit):
        main(["convert", str(archive), "-o", str(out)])
    assert capsys.readouterr().err.startswith("converted rosie:latest")
    with pytest.raises(SystemExit):
        main(["convert", str(archive), "-o", str(out), "-q", "--json"])
    assert json.loads(capsys.readouterr().out)["images"]


def test_quiet_failure_still_says_why(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["convert", str(tmp_path / "missing.tar"), "-o", str(tmp_path / "o"), "-q"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("shipit: error: cannot open ")


def test_archive_commands_load_neither_the_docker_sdk_nor_paramiko():
    """`shipit inspect`/`verify`/`convert` start fast: the Docker SDK and paramiko load
    only for commands that talk to an engine."""
    import subprocess
    import sys

    probe = (
        "import sys, shipit.api, shipit.cli; shipit.cli._register_commands(); "
        "print(sorted(m for m in ('docker', 'paramiko') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    import re
    import time

    from shipit.cli import render
    from shipit.progress import Event

    monkeypatch.setattr(render, "PLAIN_EVERY", 0.2)
    with render.progress_bar("shipping", 3_000_000, quiet=False) as progress:
        assert progress is not None  # capsys: stderr is not a terminal
        progress.stage("waiting for the source engine to prepare the save")
        progress.stage("waiting for the source engine to prepare the save")  # said once
        time.sleep(1.5)  # the ticker wakes each second: a line about the long wait
        progress.stage("shipping")
        progress.emit(Event("read", 1_500_000))
        progress.emit(Event("sent", 500_000))
        time.sleep(1.5)
    lines = capsys.readouterr().err.splitlines()
    assert all(re.match(r"shipit: \[\d+\.\d s\] ", line) for line in lines), lines
    steps = [line.split("] ", 1)[1] for line in lines]
    assert steps[0] == "waiting for the source engine to prepare the save"
    assert re.fullmatch(r"waiting for the source engine to prepare the save \(\d s\)", steps[1])
    assert "shipping" in steps
    assert any(
        re.fullmatch(
            r"shipping: 1\.5 MB of 3\.0 MB read, 0 layers done, 500\.0 kB sent \(\d s\)", s
        )
        for s in steps
    ), steps
    with render.progress_bar("shipping", None, quiet=True) as progress:
        assert progress is None  # -q: nothing at all


def test_a_fan_out_shows_each_targets_progress(capsys, monkeypatch):
    import re
    import time

    from shipit.cli import render
    from shipit.progress import Event

    monkeypatch.setattr(render, "PLAIN_EVERY", 0.2)
    with render.progress_bar("shipping", 3_000_000, quiet=False) as progress:
        assert progress is not None
        progress.stage("shipping to 2 targets")
        progress.emit(Event("read", 2_000_000))  # read once, for both
        progress.emit(Event("blob", 1000, target="edge-1"))
        progress.emit(Event("sent", 500_000, target="edge-1"))
        progress.emit(Event("sent", 1_000_000, target="edge-2"))
        time.sleep(1.5)
    lines = capsys.readouterr().err.splitlines()
    each = (
        r"shipping to 2 targets: 2\.0 MB of 3\.0 MB read, edge-1: 1 layer done, "
        r"500\.0 kB sent; edge-2: 0 layers done, 1\.0 MB sent \(\d s\)"
    )
    assert any(re.fullmatch(r"shipit: \[\d+\.\d s\] " + each, line) for line in lines), lines
