"""`robosac train` on robot envs: the asynchronous run (collector thread + learner process) end to
end through the CLI, its outputs, resume, and the README's main path on the real-time twin."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from _proc_threads import descendants

ROOT = Path(__file__).resolve().parents[1]


ENV = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))  # for every subprocess: offscreen rendering


def _python(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """`python ARGS` in the repo root, its output captured as text."""
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def _train(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return _python("-m", "robosac.cli", "train", *args, "--no-progress", timeout=timeout)


def _alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie has exited: only its parent's wait is missing)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except (FileNotFoundError, ProcessLookupError):  # gone, possibly while being read
        return False


def _cli(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """`robosac ARGS` in this process (robosac.cli.main, what the console script calls): (rc, stdout, stderr).
    For the calls that need no process of their own; `_train` runs the module as a user would."""
    from robosac import cli

    capsys.readouterr()
    rc = cli.main(list(args))
    out, err = capsys.readouterr()
    return rc, out, err


def _chunks(out: Path) -> dict[str, np.ndarray]:
    rows: dict[str, list[np.ndarray]] = {}
    for p in sorted((out / "replay").glob("chunk_*.npz")):
        with np.load(p) as z:
            for k in z.files:
                rows.setdefault(k, []).append(z[k])
    return {k: np.concatenate(v) for k, v in rows.items()}


_RUN_PAST_CAPACITY = """
import json, sys
import gymnasium as gym
import robosac  # noqa: F401
from robosac.runtime.run import RunConfig, train_async
steps, resume = int(sys.argv[1]), sys.argv[2] == "resume"
cfg = RunConfig(steps=steps, learning_starts=32, batch_size=16, replay_capacity=100, flush_every=10, checkpoint_every_s=0.5,
                eval_episodes=1, wait_for_learner_slack=20)
print(json.dumps(train_async(lambda: gym.make("robosac/ClawValveTurn-v0"), cfg, sys.argv[3], resume=resume, progress=False)))
"""


def test_resume_past_the_replay_capacity_goes_on_learning(tmp_path: Path) -> None:
    """A run resumed after more steps than its replay holds: the oldest transitions are gone from
    disk, but the learner's update cap counts every transition of the run. (It counted only the
    restored ones, so the learner, its updates restored, idled until the replay caught up, and on
    the sim backend the collector, waiting for the learner, hung: seen at 110 000 steps with a
    100 000-transition replay.)"""
    out = str(tmp_path / "run")

    def run(steps: int, mode: str) -> dict:
        r = _python("-c", _RUN_PAST_CAPACITY, str(steps), mode, out, timeout=120)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    first = run(200, "new")
    assert first["updates"] >= 200 - 20 - 1, first  # the collector kept the learner within 20 updates
    assert len(_chunks(Path(out))["step"]) < 200  # the oldest transitions were dropped from disk
    second = run(300, "resume")
    assert second["steps"] == 300 and second["updates"] >= 300 - 20 - 1, second


def test_async_run_on_the_sim_backend_and_resume(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from robosac.persist import load_checkpoint

    out = tmp_path / "run"
    common = ["robosac/ClawValveTurn-v0", "--learning-starts", "256", "--batch-size", "64", "--eval-episodes", "1",
              "--eval-every-episodes", "2", "--out", str(out), "--lr", "1e-3", "--sac", "critic_layer_norm=true"]
    r = _train(*common, "--steps", "500")
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 500 and summary["learner_restarts"] == 0
    # The sim backend waits for the learner: updates keep up with collection (cap 1 per step).
    assert 500 - 256 - 200 <= summary["updates"] <= 500
    sac = json.loads((out / "run.json").read_text())["config"]["sac"]
    assert sac["critic_layer_norm"] is True and sac["critic_lr"] == sac["actor_lr"] == 1e-3
    rows = _chunks(out)
    assert list(rows["step"]) == list(range(500))
    # Every episode's start is logged with how the claw's own reset went.
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    resets = [x for x in logged if x["kind"] == "reset"]
    episodes = sum(x["kind"] == "episode" for x in logged)  # evaluation episodes included
    assert len(resets) in (episodes, episodes + 1), (len(resets), episodes)  # + the episode under way at the end
    assert all(x["reset_attempts"] >= 1 and x["reset_current_stops"] >= 0 and x["reset_duration_s"] > 0 for x in resets), resets[:3]
    assert [x["episode"] for x in resets] == list(range(len(resets)))
    v = rows["policy_version"]
    assert (v[:256] == 0).all() and v[-1] > 0 and (np.diff(v[256:]) >= 0).all()  # random first, then newer policies
    cap = cv2.VideoCapture(summary["video"])
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 80
    cap.release()
    assert cv2.imread(summary["learning_curve"]) is not None
    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    assert {"episode/return", "eval/return", "loss/critic", "alpha", "entropy", "loop/jitter_p99_s"} <= tags, tags
    # Periodic deterministic evaluation episodes, recorded (every 2nd episode after learning starts here).
    vids = sorted((out / "videos").glob("eval_step*.mp4"))
    assert vids and all(int(cv2.VideoCapture(str(v)).get(cv2.CAP_PROP_FRAME_COUNT)) == 80 for v in vids)
    # A second run into the same directory is refused; --resume continues to the new total.
    rc, _, err = _cli(capsys, "train", *common, "--steps", "600", "--no-progress")
    assert rc == 2 and "already holds a run" in err
    # ... with a lower entropy target (the one SAC setting a resume may change), recorded in the
    # resume line and carried by the learner's checkpoint.
    r = _train(*common, "--steps", "700", "--resume", "--sac", "target_entropy=-2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 700
    resume_line = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"resume"' in line)
    assert resume_line["sac"]["target_entropy"] == -2.0 and resume_line["sac"]["critic_layer_norm"] is True
    assert load_checkpoint(out / "learner.pt")["agent"]["config"]["target_entropy"] == -2.0
    rows = _chunks(out)
    assert list(rows["step"]) == list(range(700))
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("resume") == 1 and kinds.count("eval") == 2
    # A corrupt learner checkpoint: a clear error, no silent restart from scratch.
    good = (out / "learner.pt").read_bytes()
    (out / "learner.pt").write_bytes(good[: len(good) // 2])
    rc, _, err = _cli(capsys, "train", *common, "--steps", "800", "--resume", "--no-progress")
    assert rc == 2 and "cannot resume from" in err and "learner.pt" in err
    (out / "learner.pt").write_bytes(good)
    # robosac eval replays the trained policy (built with the run's SAC settings) and records a video.
    rc, stdout, err = _cli(capsys, "eval", str(out), "--episodes", "2", "--video", str(tmp_path / "e.mp4"))
    assert rc == 0, err[-2000:]
    ev = json.loads(stdout.strip().splitlines()[-1])
    assert len(ev["returns"]) == 2 and ev["updates"] > 0 and Path(ev["video"]).exists()
    # ... from another of the twin's cameras; a camera the model lacks is named with those it has.
    rc, _, err = _cli(capsys, "eval", str(out), "--episodes", "1", "--video", str(tmp_path / "side.mp4"), "--video-camera", "side")
    assert rc == 0, err[-2000:]
    cap = cv2.VideoCapture(str(tmp_path / "side.mp4"))
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FRAME_COUNT)) == (320, 240, 80)
    cap.release()
    rc, _, err = _cli(capsys, "eval", str(out), "--video", str(tmp_path / "roof.mp4"), "--video-camera", "roof")
    assert rc == 2 and "'roof'" in err and "'side'" in err and not (tmp_path / "roof.mp4").exists()
    rc, _, err = _cli(capsys, "eval", str(out), "--video-camera", "side")
    assert rc == 2 and "--video PATH" in err
    rc, _, err = _cli(capsys, "eval", str(tmp_path))
    assert rc == 2 and "not a finished robot run" in err


def test_nothing_to_resume_and_unknown_targets(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    def train(*args: str) -> tuple[int, str]:
        rc, _, err = _cli(capsys, "train", *args, "--no-progress")
        return rc, err

    rc, err = train("robosac/ClawValveTurn-v0", "--steps", "10", "--out", str(tmp_path / "x"), "--sac", "critic_dropout=lots")
    assert rc == 2 and "--sac: SAC setting critic_dropout: invalid value 'lots'" in err
    rc, err = train("robosac/ClawValveTurn-v0", "--steps", "10", "--resume", str(tmp_path))
    assert rc == 2 and "nothing to resume" in err
    rc, err = train("robosac/Nope-v0", "--steps", "10", "--out", str(tmp_path / "x"))
    assert rc == 2 and "robosac/ClawValveTurn-v0" in err
    rc, err = train("robosac/ClawValveTurn-v0", "--steps", "10", "--out", str(tmp_path / "x"), "--env", "valve=1")
    assert rc == 2 and "--env: env setting 'valve' is not one" in err and "valve_in_state" in err
    rc, err = train("Pendulum-v1", "--steps", "10", "--out", str(tmp_path / "x"), "--env", "variant=random")
    assert rc == 2 and "--env applies to robot envs" in err
    rc, err = train("Pendulum-v1", "--steps", "10", "--out", str(tmp_path / "x"), "--relabel", "0.5")
    assert rc == 2 and "--relabel applies to robot envs with targets" in err
    assert not (tmp_path / "x").exists()
    for args, message in ((["--relabel", "1.5"], "relabel: invalid value 1.5; allowed: a fraction in (0, 1]"),
                          (["--relabel", "0.5"], "QuadrupedWalkEnv has no goals to relabel"),
                          (["--sac", "aux_weight=1"], "aux_weight: QuadrupedWalkEnv gives no auxiliary targets; allowed: 0"),
                          (["--sac", "aux_weight=1"], "aux_weight: invalid value 1.0; allowed: 0, or > 0 with image observations"),
                          (["--sac", "privileged_critic=true"],
                           "privileged_critic: QuadrupedWalkEnv gives no privileged critic inputs; allowed: false")):
        target = "robosac/QuadrupedWalk-v0" if "Quadruped" in message else "robosac/ClawValveTurn-v0"
        rc, err = train(target, "--steps", "10", "--out", str(tmp_path / "y"), *args)
        assert rc == 2 and message in err, err


def test_pixel_claw_without_the_valve_in_its_state_trains_and_evaluates(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    r = _train("robosac/ClawValveTurn-v0", "--pixels", "--env", "variant=random", "--env", "valve_in_state=false",
               "--env", "frame_stack=2", "--steps", "300", "--learning-starts", "256", "--batch-size", "32", "--eval-episodes", "1",
               "--eval-every-episodes", "0", "--relabel", "0.5", "--sac", "aux_weight=1", "--sac", "privileged_critic=true",
               "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    # The learner relabelled from the replay's valve angles and learned to predict them from the
    # images (aux_weight) without dying (it would be restarted).
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["learner_restarts"] == 0 and summary["updates"] > 0
    aux_losses = [line["loss_aux"] for line in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                  if line["kind"] == "train" and "loss_aux" in line]
    assert aux_losses and all(math.isfinite(v) for v in aux_losses)
    desc = json.loads((out / "run.json").read_text())
    assert desc["config"]["sac"]["aux_dim"] == 2  # from the env: the valve's cos and sin
    assert desc["config"]["sac"]["priv_dim"] == 2  # the privileged critic's input: the same at s and s'
    assert desc["pixels"] and desc["env_kwargs"] == {"variant": "random", "valve_in_state": False, "frame_stack": 2}
    rows = _chunks(out)
    assert rows["obs.state"].shape == (300, 29) and rows["obs.pixels"].shape == (300, 6, 64, 64)  # stored channels-first
    assert rows["valve_rad"].shape == (300,) and np.ptp(rows["valve_rad"]) > 0.5  # kept for relabelling; random starts
    # The angle at s is the one the previous row reached, except where a reset moved the valve.
    jumps = np.flatnonzero(rows["valve_rad_before"][1:] != rows["valve_rad"][:-1]) + 1
    starts = np.flatnonzero(~rows["obs.state"][:, 18:27].any(1))  # a reset's observation: the last action is zero
    assert len(starts) >= 3 and set(jumps) <= set(starts), (jumps, starts)
    # eval rebuilds the env with the run's settings: a 31-long state or 3-channel frames would not fit the networks.
    rc, stdout, err = _cli(capsys, "eval", str(out), "--episodes", "1")
    assert rc == 0, err[-2000:]
    assert len(json.loads(stdout.strip().splitlines()[-1])["returns"]) == 1


def test_claw_on_the_real_time_twin(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The README's main path, briefly: a hardware config, --twin, training at the control rate."""
    out = tmp_path / "twin"
    r = _train("hardware_configs/claw.yaml", "--twin", "--steps", "100", "--learning-starts", "64", "--batch-size", "32",
               "--eval-episodes", "1", "--out", str(out), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["steps"] == 100 and s["overruns"] <= 2 and s["updates"] >= 1
    # A paced hardware loop asks for SCHED_FIFO (granted here as root; elsewhere it says refused).
    assert s["loop_scheduling"] == "SCHED_FIFO 50" or s["loop_scheduling"].startswith("normal (SCHED_FIFO refused")
    # The twin's audit: no goal outside the config's limits reached a servo (resets included).
    assert s["twin_servo_limit_violations"] == {}
    run = json.loads((out / "run.json").read_text())
    assert run["backend"] == "hardware" and run["twin"] is True
    assert (out / "eval.mp4").exists() and (out / "learning_curve.png").exists()
    # A run that stops with an error still reports the twin's audit (here: refused, the directory holds a run).
    rc, _, err = _cli(capsys, "train", str(ROOT / "hardware_configs" / "claw.yaml"), "--twin", "--steps", "100", "--out", str(out), "--no-progress")
    assert rc == 2 and "already holds a run" in err, err[-3000:]
    assert "twin_servo_limit_violations: {}" in err, err[-3000:]


@pytest.mark.parametrize("fault", ["servo_overload", "camera_dropped"])
def test_twin_fault_mid_run_stops_safely_and_keeps_the_data(tmp_path: Path, fault: str) -> None:
    """A persistent servo overload or a camera that stops, in the middle of an asynchronous run:
    the run ends with a clear error and torque off, and the replay and the learner's checkpoint
    are on disk for --resume."""
    import threading

    import gymnasium as gym

    import robosac  # noqa: F401
    from _twin_inproc import BUS, running_twin
    from robosac.runtime.run import RunConfig, RunError, train_async

    with running_twin("hardware_configs/claw.yaml") as tw:
        def make_env():
            return gym.make("robosac/ClawValveTurn-v0", backend="hardware", port=tw.port, camera_source=tw.camera_url,
                            pixels=fault == "camera_dropped", bus_settings={**BUS, "max_reboots": 1}, render_mode="rgb_array")

        def inject() -> None:
            if fault == "servo_overload":
                tw.chain.faults.raise_hardware_error(5, "overload", persistent=True)
            else:
                tw.streamer.stop()

        timer = threading.Timer(6.0, inject)
        timer.start()
        cfg = RunConfig(steps=400, learning_starts=32, batch_size=16, replay_capacity=1000, flush_every=10, checkpoint_every_s=1.0,
                        eval_episodes=1)
        with pytest.raises(RunError, match="BusError|HardwareFault|Stale|stale|camera") as ei:
            train_async(make_env, cfg, tmp_path / "run", progress=False)
        timer.cancel()
        assert "--resume continues" in str(ei.value)
        rows = _chunks(tmp_path / "run")
        assert len(rows["step"]) >= 5 and list(rows["step"]) == list(range(len(rows["step"])))
        assert (tmp_path / "run" / "learner.pt").exists()
        kinds = [json.loads(line)["kind"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        assert "error" in kinds
        # The run is over: the env closed the bus with torque off on every servo.
        assert not any(tw.chain.get_item(i, "torque_enable") for i in tw.chain.ids())
        tw.chain.faults.clear()


def test_learner_killed_mid_run_is_restarted_while_the_collector_keeps_acting(tmp_path: Path) -> None:
    import multiprocessing as mp
    import signal
    import threading
    import time

    import gymnasium as gym

    import robosac  # noqa: F401
    from robosac.runtime.run import RunConfig, train_async

    result: dict = {}
    cfg = RunConfig(steps=1500, learning_starts=128, batch_size=32, eval_episodes=1, checkpoint_every_s=0.5,
                    wait_for_learner_slack=100, eval_every_episodes=0)
    t = threading.Thread(target=lambda: result.update(train_async(lambda: gym.make("robosac/ClawValveTurn-v0", backend="sim"),
                                                                   cfg, tmp_path / "run", progress=False)))
    t.start()
    deadline = time.monotonic() + 60
    killed = None
    while killed is None and time.monotonic() < deadline:
        time.sleep(0.2)
        kids = [p for p in mp.active_children() if p.name == "robosac-learner"]
        if kids and (tmp_path / "run" / "learner.pt").exists():
            killed = kids[0].pid
            os.kill(killed, signal.SIGKILL)
    t.join(180)
    assert killed is not None and not t.is_alive()
    assert result["steps"] == 1500 and result["learner_restarts"] >= 1
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    restarts = [x for x in lines if x["kind"] == "learner_restart"]
    assert restarts and "SIGKILL" in restarts[0]["message"]
    assert result["updates"] > 0


def test_sigterm_stops_a_robot_run_cleanly(tmp_path: Path) -> None:
    """SIGTERM (kill, systemd, docker stop) mid-run ends `robosac train` as Ctrl-C does: the loop
    stops, every collected transition is flushed (none had been: the flush interval is not
    reached), the learner writes a last checkpoint that counts the same transitions, and the
    learner process is gone."""
    import signal
    import time

    from robosac.persist import load_checkpoint

    out = tmp_path / "run"
    args = [sys.executable, "-m", "robosac.cli", "train", "robosac/ClawValveTurn-v0", "--steps", "100000", "--learning-starts", "64",
            "--batch-size", "32", "--eval-every-episodes", "0", "--replay-flush-every", "100000", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        metrics = out / "metrics.jsonl"
        while not (metrics.exists() and '"kind": "episode"' in metrics.read_text()) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        # The run's children: multiprocessing's resource tracker and the server the learner was forked from.
        tree = descendants(proc.pid)
        learners = [p for p, parent in tree.items() if parent != proc.pid]
        assert len(learners) == 1 and len(tree) == 3, tree
        assert not list((out / "replay").glob("chunk_*.npz"))  # nothing flushed yet
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    steps = _chunks(out)["step"]
    assert len(steps) >= 80 and list(steps) == list(range(len(steps)))  # at least the first 8-s episode, every step once
    assert (out / "learner.pt").exists(), err[-3000:]  # the run's log says why, if not
    counters = load_checkpoint(out / "learner.pt")["counters"]
    assert counters["transitions"] == len(steps), counters  # written after the loop stopped

    assert not _alive(learners[0])  # the learner was joined before the exit
    # The resource tracker and the server leave by themselves once the exited parent's pipes close (0-2 s measured).
    t_end = time.monotonic() + 10
    while any(_alive(c) for c in tree) and time.monotonic() < t_end:
        time.sleep(0.05)
    assert not any(_alive(c) for c in tree)


@pytest.mark.parametrize("tied", [True, False])
def test_run_tied_child_ends_with_its_parent(tied: bool) -> None:
    """run_tied (what benchmarks/ start their learners with): kill -9 of the parent ends the child
    within seconds; a plain subprocess.run child, the contrast, outlives it."""
    import signal
    import time

    start = ("from robosac.runtime.child import run_tied as run" if tied else "from subprocess import run")
    parent = subprocess.Popen([sys.executable, "-c", f"import sys; {start}; run([sys.executable, '-c', 'import time; time.sleep(60)'])"],
                              cwd=ROOT)
    deadline = time.monotonic() + 30
    children: list[int] = []
    while not children and time.monotonic() < deadline:
        time.sleep(0.05)
        children = [int(x) for x in subprocess.run(["ps", "-o", "pid=", "--ppid", str(parent.pid)], capture_output=True, text=True).stdout.split()]
    assert len(children) == 1 and _alive(children[0])
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(10)
    t_end = time.monotonic() + 5
    while _alive(children[0]) and time.monotonic() < t_end:
        time.sleep(0.05)
    try:
        assert _alive(children[0]) is not tied
    finally:
        if _alive(children[0]):
            os.kill(children[0], signal.SIGKILL)


def test_kill_9_of_a_robot_run_then_resume(tmp_path: Path) -> None:
    """kill -9 of `robosac train` on a robot env: the learner process does not live on orphaned,
    nothing flushed is lost, and --resume continues the step count to the total."""
    import signal
    import time

    out = tmp_path / "run"
    args = [sys.executable, "-m", "robosac.cli", "train", "robosac/ClawValveTurn-v0", "--steps", "600", "--learning-starts", "128",
            "--batch-size", "32", "--eval-episodes", "1", "--eval-every-episodes", "0", "--replay-flush-every", "50",
            "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while len(list((out / "replay").glob("chunk_*.npz"))) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = descendants(proc.pid)  # the resource tracker, the server the learner was forked from, the learner
    assert len(tree) == 3 and len([p for p, parent in tree.items() if parent != proc.pid]) == 1, tree
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    flushed = _chunks(out)["step"]
    assert len(flushed) >= 200 and list(flushed) == list(range(len(flushed)))

    # The orphaned learner notices its parent is gone and exits (it never trains on unsupervised).
    t_end = time.monotonic() + 15
    while any(_alive(c) for c in tree) and time.monotonic() < t_end:
        time.sleep(0.2)
    assert not any(_alive(c) for c in tree)
    r = _python(*args[1:-3], "--resume", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["steps"] == 600
    rows = _chunks(out)["step"]
    assert list(rows) == list(range(600))  # the flushed prefix kept, then continued
