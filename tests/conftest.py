"""Shared test set-up: headless MuJoCo rendering through EGL (set before anything imports mujoco),
and the claw's servo chain emulated on a pty with a configured bus on it."""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from robosac.config import load_config  # noqa: E402
from robosac.hal import ServoBus  # noqa: E402
from sim.dxl import ServoChain  # noqa: E402

CLAW = Path(__file__).resolve().parents[1] / "hardware_configs" / "claw.yaml"


def _configured_bus(cfg):
    chain = ServoChain.from_config(cfg)
    path = chain.start()
    bus = ServoBus.from_config(cfg, port=path, reopen_backoff_s=0.02, reopen_attempts=4, margin_ms=20.0).open()
    try:
        bus.configure()
        bus.enable_torque()
        yield cfg, chain, bus
    finally:
        bus.close()
        chain.stop()


@pytest.fixture
def claw():
    """(config, running chain, open+configured bus with torque on) for hardware_configs/claw.yaml.

    The reply-timeout margin is 20 ms: the emulator shares 2 busy cores with pytest, so the 2 ms
    default (right for real servos) would add spurious retries and make exact counter checks flaky.
    """
    yield from _configured_bus(load_config(CLAW))


@pytest.fixture
def claw_mode3():
    """As `claw`, with the fingers in plain position mode (3), where the firmware enforces its own
    Min/Max Position Limit (the claw config uses current-based position mode 5, which does not)."""
    from _emu_util import position_mode_claw

    yield from _configured_bus(position_mode_claw())


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Re-arm the crash traceback before every test: `ray.shutdown()` (the distributed tests)
    resets SIGSEGV to the default action, after which a segfault in a later test would kill
    pytest without a word (it did once in CI, at test_envs.py)."""
    import faulthandler

    from _pytest.faulthandler import fault_handler_stderr_fd_key

    fd = item.config.stash.get(fault_handler_stderr_fd_key, None)
    if fd is not None:
        faulthandler.disable()
        faulthandler.enable(file=fd, all_threads=True)
