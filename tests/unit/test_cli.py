"""The CLI's last line of defence: whatever escapes the library ends as one clear line."""

from __future__ import annotations

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
