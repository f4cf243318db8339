"""Operator tools (`robosac scan`, `set-id`, ...) via robosac.cli.main against the emulated chain."""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

from robosac.cli import build_parser, main
from sim.dxl import ServoChain, ServoSpec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def chain():
    with ServoChain([ServoSpec(id=1), ServoSpec(id=2, model="XL430-W250", firmware=44), ServoSpec(id=3)]) as ch:
        yield ch


def test_scan_tries_bauds_and_lists_id_model_firmware(chain, capsys) -> None:
    assert main(["scan", "--port", chain.port, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["id"], r["model"], r["firmware"], r["baud"]) for r in rows] == [
        (1, "XM430-W350", 46, 1_000_000), (2, "XL430-W250", 44, 1_000_000), (3, "XM430-W350", 46, 1_000_000)]


def test_scan_reports_no_servos_clearly(chain, capsys) -> None:
    assert main(["scan", "--port", chain.port, "--baud", "115200"]) == 1
    assert "no servos found" in capsys.readouterr().err


def test_missing_port_is_a_clear_error(capsys) -> None:
    assert main(["scan", "--port", "/dev/ttyUSB_robosac_nope", "--baud", "1000000"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "plugged in" in err


def test_permission_denied_names_the_dialout_fix(tmp_path) -> None:
    port = tmp_path / "ttyFAKE"
    port.write_text("")
    os.chmod(port, 0o600 if os.geteuid() == 0 else 0o000)
    if os.geteuid() != 0:
        err = io.StringIO()
        old, sys.stderr = sys.stderr, err
        try:
            rc = main(["read-item", "--port", str(port), "--id", "1", "id"])
        finally:
            sys.stderr = old
        assert rc == 2 and "dialout" in err.getvalue()
        return
    # As root nothing is denied: fork, drop to nobody, and run the command there.
    build_parser()  # import every command module before dropping privileges
    os.chmod(tmp_path, 0o755)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = io.StringIO()
            rc = main(["read-item", "--port", str(port), "--id", "1", "id"])
            os.write(w, f"{rc}|{sys.stderr.getvalue()}".encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = os.read(r, 8192).decode()
    os.close(r)
    rc, _, msg = out.partition("|")
    assert rc == "2" and "permission denied" in msg and "dialout" in msg


def test_set_id_refuses_conflict_then_moves(chain, capsys) -> None:
    assert main(["set-id", "--port", chain.port, "--id", "3", "--new-id", "1"]) == 1
    assert "ID conflict" in capsys.readouterr().err
    assert main(["set-id", "--port", chain.port, "--id", "3", "--new-id", "9"]) == 0
    assert chain.ids() == [1, 2, 9]
    assert main(["set-id", "--port", chain.port, "--id", "42", "--new-id", "43"]) == 1
    assert "no servo answers at ID 42" in capsys.readouterr().err


def test_set_baud(chain, capsys) -> None:
    assert main(["set-baud", "--port", chain.port, "--id", "3", "--new-baud", "57600"]) == 0
    assert main(["read-item", "--port", chain.port, "--baud", "57600", "--id", "3", "baud_rate"]) == 0
    assert capsys.readouterr().out.strip().endswith("1")


def test_read_and_write_items_by_name(chain, capsys) -> None:
    assert main(["write-item", "--port", chain.port, "--id", "1", "profile_velocity", "77"]) == 0
    assert main(["read-item", "--port", chain.port, "--id", "1", "profile_velocity"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "77"
    assert main(["read-item", "--port", chain.port, "--id", "2", "present_load"]) == 0  # XL430 item
    assert main(["read-item", "--port", chain.port, "--id", "2", "present_current"]) == 1
    assert "has no control-table item" in capsys.readouterr().err
    # EEPROM with torque on is refused with the fix.
    assert main(["write-item", "--port", chain.port, "--id", "1", "torque_enable", "1"]) == 0
    assert main(["write-item", "--port", chain.port, "--id", "1", "operating_mode", "4"]) == 1
    assert "torque_enable 0 first" in capsys.readouterr().err
    # A value the servo rejects surfaces the servo's status error.
    assert main(["write-item", "--port", chain.port, "--id", "1", "led", "7"]) == 1
    assert "status error" in capsys.readouterr().err


def test_jog_moves_within_limits_and_refuses_outside(capsys) -> None:
    from robosac.config import load_config

    cfg = load_config(ROOT / "hardware_configs" / "claw.yaml")
    with ServoChain.from_config(cfg) as ch:
        args = ["jog", str(ROOT / "hardware_configs" / "claw.yaml"), "--port", ch.port, "--joint", "f0_top"]
        assert main(args + ["--to", "0.3", "--speed", "3", "--settle", "0.5"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["reached_rad"] == pytest.approx(0.3, abs=0.02)
        assert main(args + ["--to", "1.0"]) == 1
        assert "outside f0_top's limits" in capsys.readouterr().err
        assert main(args[:-1] + ["nope", "--by", "0.1"]) == 1
        assert "no joint 'nope'" in capsys.readouterr().err


def test_latency_probe_prints_stats(chain, capsys) -> None:
    assert main(["latency", "--port", chain.port, "--ids", "1", "3", "-n", "20"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ping_misses"] == 0 and out["ping_rtt"]["n"] == 20
    assert out["sync_read_10B_rtt"]["median_ms"] > 0


def test_ftdi_latency_writes_sysfs_and_udev_rule(chain, tmp_path, capsys) -> None:
    tty = os.path.basename(os.path.realpath(chain.port))
    f = tmp_path / "sys" / "bus" / "usb-serial" / "devices" / tty / "latency_timer"
    f.parent.mkdir(parents=True)
    f.write_text("16\n")
    rule = tmp_path / "99.rules"
    args = ["ftdi-latency", "--port", chain.port, "--sysfs-root", str(tmp_path / "sys"), "--udev-out", str(rule)]
    assert main(args) == 0
    assert f.read_text().strip() == "1"
    assert 'ATTR{latency_timer}="1"' in rule.read_text()
    assert "16 ms -> 1 ms" in capsys.readouterr().out
    # Not an FTDI device: a clear error (the rule is still written for the user).
    assert main(["ftdi-latency", "--port", chain.port, "--sysfs-root", str(tmp_path / "none"),
                 "--udev-out", str(rule)]) == 1
    assert "not an FTDI" in capsys.readouterr().err


def test_every_tool_has_help(capsys) -> None:
    for cmd in ("scan", "set-id", "set-baud", "read-item", "write-item", "jog", "latency", "ftdi-latency"):
        with pytest.raises(SystemExit) as ei:
            main([cmd, "--help"])
        assert ei.value.code == 0
        assert "usage: robosac " + cmd in capsys.readouterr().out


def test_scan_flags_fewer_servos_than_expected_as_possible_id_conflict(capsys) -> None:
    with ServoChain([ServoSpec(id=1), ServoSpec(id=1), ServoSpec(id=2)]) as ch:
        assert main(["scan", "--port", ch.port, "--baud", "1000000", "--expect", "3"]) == 0
        captured = capsys.readouterr()
        assert "expected 3 servos, found 2" in captured.err and "share an ID" in captured.err


def test_scan_as_a_subprocess_against_robosac_twin() -> None:
    """The installed console script, end to end: `robosac twin` in one process, `robosac scan` in another."""
    import signal
    import subprocess

    exe = Path(sys.executable).with_name("robosac")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "robosac.cli"]
    twin = subprocess.Popen(cmd + ["twin", str(ROOT / "hardware_configs" / "claw.yaml"), "--physics", "none"],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert twin.stdout is not None
        line = twin.stdout.readline()
        assert line.startswith("serial: "), line
        port = line.split(":", 1)[1].strip()
        r = subprocess.run(cmd + ["scan", "--port", port, "--baud", "1000000", "--json"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        assert [row["id"] for row in json.loads(r.stdout)] == list(range(1, 11))
    finally:
        twin.send_signal(signal.SIGINT)
        try:
            twin.wait(timeout=10)
        except subprocess.TimeoutExpired:
            twin.kill()


def test_each_command_imports_its_own_module_only() -> None:
    """`robosac fault status`, `robosac twin` or `robosac train` with a bad setting does not wait for
    torch; `--help` lists every command."""
    import subprocess

    from robosac.cli import COMMANDS

    full = build_parser()
    choices = next(a.choices for a in full._subparsers._group_actions)  # the COMMAND argument's sub-parsers
    assert list(choices) == list(COMMANDS)  # the table names every registered command, in --help order
    for command in ("train", "fault", "scan"):
        assert set(next(a.choices for a in build_parser(command)._subparsers._group_actions)) == {
            c for c, m in COMMANDS.items() if m == COMMANDS[command]}
    probe = ("import sys; from robosac.cli import build_parser; build_parser(sys.argv[1]); "
             "print('torch' in sys.modules)")
    seen = {c: subprocess.run([sys.executable, "-c", probe, c], capture_output=True, text=True, cwd=ROOT, timeout=60).stdout.strip()
            for c in ("fault", "scan", "train")}
    assert seen == {"fault": "False", "scan": "False", "train": "False"}, seen
    bad = ("import sys; from robosac.cli import main; "
           "code = main(['train', 'robosac/ClawValveTurn-v0', '--out', sys.argv[1], '--sac', 'gamma=fast']); "
           "print(code, 'torch' in sys.modules)")
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run([sys.executable, "-c", bad, tmp], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.stdout.strip() == "2 False", done.stdout + done.stderr
    assert "--sac: SAC setting gamma: invalid value 'fast'" in done.stderr
