"""systemd/bistouryd.service and its notify-reload drop-in, checked offline.

``systemd-analyze verify`` only warns about bad values, so any output at all is a
failure. Only ExecStart= is rewritten (to this venv's ``bistouryd``, since verify wants
an existing executable); every other line is checked exactly as shipped. systemd does
not need to be PID 1 for these checks.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bistouryd import paths
from bistouryd.protocol import DAEMON_EXIT_CONFIG, DAEMON_EXIT_EMERGENCY

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd" / "bistouryd.service"
DROPIN = REPO / "systemd" / "bistouryd-notify-reload.conf"
INSTALLER = REPO / "scripts" / "install-system.sh"
INSTALLED_EXEC = "/opt/bistoury/venv/bin/bistouryd"
BISTOURYD = Path(sys.executable).parent / "bistouryd"

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed (package systemd)"
)
OVERALL = re.compile(r"Overall exposure level for bistouryd\.service: ([0-9.]+) ([A-Z]+)")


def directives(text: str) -> dict[str, list[str]]:
    """Key → values of a unit file, in order (systemd allows a key several times)."""
    found: dict[str, list[str]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "--no-pager", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_COLORS": "0", "LANG": "C.UTF-8"},
    )


def systemd_version() -> int:
    first = analyze("--version").stdout.splitlines()[0]  # "systemd 252 (252.38-1~deb12u1)"
    return int(first.split()[1])


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The shipped unit in a temp dir, with ExecStart= pointing at this venv's bistouryd."""
    assert BISTOURYD.is_file(), f"{BISTOURYD} missing: install the package into this venv"
    text = UNIT.read_text(encoding="utf-8")
    shipped = f"ExecStart={INSTALLED_EXEC}\n"
    assert text.count(shipped) == 1, f"expected exactly one line {shipped.strip()!r}"
    path = tmp_path / "bistouryd.service"
    path.write_text(text.replace(shipped, f"ExecStart={BISTOURYD}\n"), encoding="utf-8")
    return path


def test_unit_matches_the_daemon() -> None:
    """The lines the daemon's behaviour depends on; a wrong one fails only in production."""
    unit = directives(UNIT.read_text(encoding="utf-8"))
    one = {key: values[-1] for key, values in unit.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"  # agents have NOTIFY_SOCKET stripped
    assert one["KillMode"] == "mixed"  # the main process stops the agents itself
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert one["ExecStart"] == INSTALLED_EXEC  # no --daemon: refused under systemd
    assert one["Restart"] == "on-failure"
    no_restart = set(one["RestartPreventExitStatus"].split())
    assert no_restart == {str(DAEMON_EXIT_CONFIG), str(DAEMON_EXIT_EMERGENCY)}
    assert one["WatchdogSec"] not in ("", "0", "infinity")
    assert (one["User"], one["Group"]) == ("bistoury", "bistoury")
    for kind in ("Runtime", "State", "Configuration", "Logs"):
        assert one[f"{kind}Directory"] == "bistoury"
        assert one[f"{kind}DirectoryMode"] == "0750"
    # bistouryctl finds the system daemon's socket in paths.SYSTEM_RUNTIME_DIR.
    assert Path("/run") / one["RuntimeDirectory"] == paths.SYSTEM_RUNTIME_DIR
    assert one["EnvironmentFile"] == f"-/etc/bistoury/{paths.ENV_FILE}"
    assert "StartLimitBurst" in unit and "StartLimitIntervalSec" in unit
    # The daemon trades over the internet: nothing may cut it off from the network.
    assert "PrivateNetwork" not in unit and "IPAddressDeny" not in unit
    # install-system.sh creates the venv that ExecStart= runs.
    assert f'PREFIX={Path(INSTALLED_EXEC).parents[2]}\nVENV="$PREFIX/venv"' in (
        INSTALLER.read_text(encoding="utf-8")
    )


@needs_analyze
def test_verify_prints_nothing(unit_copy: Path) -> None:
    """verify exits 0 even on bad values, so silence is the only pass criterion."""
    result = analyze("verify", "--man=no", str(unit_copy))
    assert result.stdout + result.stderr == ""
    assert result.returncode == 0


@needs_analyze
def test_verify_does_report_mistakes(unit_copy: Path) -> None:
    """Guards the criterion above: on this systemd, verify does print a bad key or value."""
    with unit_copy.open("a", encoding="utf-8") as fh:
        fh.write("[Service]\nRestart=sometimes\nProtectEverything=yes\n")
    result = analyze("verify", "--man=no", str(unit_copy))
    output = result.stdout + result.stderr
    assert "Failed to parse service restart specifier" in output
    assert "Unknown key 'ProtectEverything'" in output


@needs_analyze
def test_security_exposure_is_ok(unit_copy: Path) -> None:
    """Hardening regressions show up as a worse overall rating than "OK" (2.0)."""
    result = analyze("security", "--offline=true", "--threshold=20", str(unit_copy))
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert lines, result.stderr
    match = OVERALL.search(lines[-1])
    assert match, f"no overall exposure line in: {lines[-1]!r}"
    score, rating = float(match[1]), match[2]
    assert rating in ("SAFE", "OK"), f"exposure {score} {rating}:\n{result.stdout}"
    assert result.returncode == 0, result.stdout + result.stderr


def test_dropin_switches_to_notify_reload() -> None:
    """The drop-in must set the new type and clear ExecReload, or SIGHUP would be sent twice."""
    dropin = directives(DROPIN.read_text(encoding="utf-8"))
    assert dropin["Type"] == ["notify-reload"]
    assert dropin["ExecReload"] == [""]
    assert dropin.get("ReloadSignal", ["SIGHUP"]) == ["SIGHUP"]
    assert set(dropin) <= {"Type", "ExecReload", "ReloadSignal"}


@needs_analyze
def test_dropin_verifies(unit_copy: Path) -> None:
    """With systemd >= 253 the unit plus drop-in verifies silently. systemd 252 (Debian 12)
    knows neither Type=notify-reload nor ReloadSignal=, which is why install-system.sh
    installs the drop-in only on >= 253; there, those two complaints and nothing else.
    """
    dropin_dir = unit_copy.parent / "bistouryd.service.d"
    dropin_dir.mkdir()
    shutil.copy(DROPIN, dropin_dir / DROPIN.name)
    result = analyze("verify", "--man=no", str(unit_copy))
    output = result.stdout + result.stderr
    if systemd_version() >= 253:
        assert output == ""
        return
    complaints = {line.split(": ", 1)[1] for line in output.splitlines() if line.strip()}
    assert complaints == {
        "Failed to parse service type, ignoring: notify-reload",
        "Unknown key 'ReloadSignal' in section [Service], ignoring.",
    }, output
