"""The programs end at once: what they printed still arrives, and their status is kept."""

from __future__ import annotations

import subprocess
import sys

from shipit import __version__


def program(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_the_output_of_a_run_is_flushed_before_the_process_ends() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shipit", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, f"shipit {__version__}\n")


def test_a_usage_error_keeps_its_status_and_its_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "shipit", "ship", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "No such option: --bogus" in done.stderr


def test_a_status_number_is_the_exit_status() -> None:
    done = program(
        "import sys\nfrom shipit.cli import exit_after\n"
        "def entry():\n    print('partial', end='')\n    sys.exit(7)\n"
        "exit_after(entry)"
    )
    assert (done.returncode, done.stdout) == (7, "partial")


def test_a_message_instead_of_a_status_is_printed_and_exits_1() -> None:
    done = program(
        "import sys\nfrom shipit.cli import exit_after\nexit_after(lambda: sys.exit('boom'))"
    )
    assert (done.returncode, done.stderr) == (1, "boom\n")


def test_an_entry_that_returns_exits_0() -> None:
    done = program("from shipit.cli import exit_after\nexit_after(lambda: print('ok'))")
    assert (done.returncode, done.stdout) == (0, "ok\n")


def test_the_plugin_program_ends_the_same_way() -> None:
    done = program(
        "import sys\nsys.argv = ['docker-shipit', 'docker-cli-plugin-metadata']\n"
        "from shipit.cli.plugin import console\nconsole()"
    )
    assert done.returncode == 0
    assert '"SchemaVersion"' in done.stdout
