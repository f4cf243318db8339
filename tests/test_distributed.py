"""Distributed training on Ray (robosac/distributed), on one machine: a local Ray cluster on loopback,
two real-time claw twins (`robosac twin`: two serial ports through the real dynamixel SDK), one
collector actor per twin, one learner actor. No mocks: real Ray, real twins, real SAC.

One scenario runs once for the module (Ray and the twins start once; the suite's budget is tight
on 2 cores) and records what it saw; the tests below assert on the record:
  1. both robots feed the learner, which trains and publishes weights the robots act with;
  2. one collector is killed (ray.kill) and Ray restarts it: its robot rejoins, the other never stops;
  3. the learner is killed: both control loops keep stepping, buffer their transitions, stay safe,
     and deliver every buffered transition to the learner restored from its checkpoint;
  4. `robosac train ... --cluster local --resume` continues the run from its directory.
"""

from __future__ import annotations

import gc
import ipaddress
import json
import math
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import ray

from _emu_util import wait_for
from _proc_threads import descendants
from _proc_threads import threads as proc_threads
from robosac import cli
from robosac.config import load_config
from robosac.distributed import DistributedError, missing_ray_message, require_ray
from robosac.distributed.cluster import ClusterSpec, connect, parse_cluster
from robosac.distributed.outbox import Outbox
from robosac.distributed.run import DistRunConfig, DistributedRun, RobotSpec, parse_robot
from robosac.runtime.bench import TwinProcess

ROOT = Path(__file__).resolve().parents[1]
CLAW = ROOT / "hardware_configs" / "claw.yaml"
ENV_ID = "robosac/ClawValveTurn-v0"
# Two twins, Ray, two collectors and a learner share 2 cores here: replies get more margin than the
# 2 ms real servos need (as the other twin tests do), so CPU contention is not taken for a dead servo.
BUS = {"margin_ms": 50.0, "read_retries": 4, "reopen_backoff_s": 0.02}
CFG = DistRunConfig(steps=10**6, learning_starts=64, batch_size=32, publish_every=5, checkpoint_every_s=2.0,
                    flush_every=50, flush_interval_s=1.0, rpc_timeout_s=1.0, outbox_capacity=2000)


# ---- checks that need no cluster -------------------------------------------------------------------


def test_cluster_refuses_a_public_bind_without_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    rc = cli.main(["train", str(CLAW), "--cluster", "local", "--bind", "0.0.0.0", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "--bind 0.0.0.0" in err and "without --allow-public-bind" in err and "every network interface" in err
    rc = cli.main(["train", str(CLAW), "--cluster", "0.0.0.0:6379", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "wildcard address" in err and "--allow-public-bind" in err
    # Relabelling and the auxiliary head are single-machine features: refused by name, before Ray starts.
    rc = cli.main(["train", str(CLAW), "--cluster", "local", "--pixels", "--sac", "aux_weight=1", "--out", str(out)])
    assert rc == 2 and "--sac aux_weight is not available with --cluster" in capsys.readouterr().err
    rc = cli.main(["train", str(CLAW), "--cluster", "local", "--pixels", "--sac", "privileged_critic=true", "--out", str(out)])
    assert rc == 2 and "--sac privileged_critic is not available with --cluster" in capsys.readouterr().err
    rc = cli.main(["train", str(CLAW), "--cluster", "local", "--relabel", "0.5", "--out", str(out)])
    assert rc == 2 and "--relabel is not available with --cluster" in capsys.readouterr().err
    assert not out.exists() and not ray.is_initialized()  # refused before anything started
    # With the flag it is accepted (not started here); bad values name what is allowed.
    assert parse_cluster("local", bind="0.0.0.0", allow_public_bind=True) == ClusterSpec("local", None, "0.0.0.0")
    with pytest.raises(DistributedError, match=r"--cluster: invalid value 'nowhere'; allowed: auto, local, HOST:PORT"):
        parse_cluster("nowhere")
    with pytest.raises(DistributedError, match="--bind applies to --cluster local only"):
        parse_cluster("auto", bind="10.0.0.2")
    rc = cli.main(["train", str(CLAW), "--robot", "claw1", "--out", str(out)])
    assert rc == 2 and "--robot applies to distributed training only: add --cluster" in capsys.readouterr().err
    with pytest.raises(ValueError, match="invalid option 'baud=1'"):
        parse_robot("claw1,baud=1")
    assert parse_robot("claw2,port=/dev/ttyUSB1,camera=0") == RobotSpec("claw2", "/dev/ttyUSB1", 0)


def test_missing_ray_tells_the_user_to_install_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture) -> None:
    assert "pip install 'robosac[distributed]'" in missing_ray_message()
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets where Ray is not installed
    with pytest.raises(DistributedError, match=r"needs Ray \(ray>=2.9\).*pip install 'robosac\[distributed\]'"):
        require_ray()
    rc = cli.main(["train", str(CLAW), "--cluster", "local", "--out", str(tmp_path / "run")])
    assert rc == 2 and "pip install 'robosac[distributed]'" in capsys.readouterr().err


def test_outbox_drops_the_oldest_and_rewinds_for_a_learner_that_lost_rows() -> None:
    box = Outbox(capacity=4)
    for i in range(6):
        box.put({"i": i})
    assert box.dropped == 2 and box.held == 4  # rows 0 and 1 never sent
    first, oldest, rows = box.batch(3)
    assert (first, oldest, [r["i"] for r in rows]) == (2, 2, [2, 3, 4])
    box.ack(next_seq=5, durable_seq=3)  # the learner has 2..4, 2 on disk
    assert box.held == 3 and box.unsent == 1
    box.ack(next_seq=3, durable_seq=3)  # a restarted learner lost 3 and 4: send them again
    first, _, rows = box.batch(10)
    assert first == 3 and [r["i"] for r in rows] == [3, 4, 5]
    box.release(6)
    assert box.held == 0 and box.unsent == 0


def _feed(learner: Any, first_seq: int, n: int, rng: np.random.Generator) -> None:
    """n rows of a 3-d state, 2-d action robot "a" on stream 0, in batches of 10."""
    for seq in range(first_seq, first_seq + n, 10):
        m = min(10, first_seq + n - seq)
        rows = {"obs.state": rng.uniform(-1, 1, (m, 3)).astype(np.float32), "action": rng.uniform(-1, 1, (m, 2)).astype(np.float32),
                "next_obs.state": rng.uniform(-1, 1, (m, 3)).astype(np.float32), "reward": rng.normal(size=m).astype(np.float32),
                "terminated": np.zeros(m, np.float32), "policy_version": np.zeros(m, np.int64),
                "episode": np.arange(seq, seq + m) // 50, "episode_end": np.arange(seq, seq + m) % 50 == 49}
        assert learner.add("a", 0, seq, seq, rows)["accepted"] == m


def test_learner_resumed_past_its_replay_capacity_goes_on_learning(tmp_path: Path) -> None:
    """The store keeps only replay_capacity rows on disk; a resumed learner must still count the run's
    transitions, or its cap (updates <= transitions) holds it idle until the kept rows catch up."""
    from gymnasium import spaces

    from robosac.distributed.learner_actor import LearnerActor, LearnerSettings
    from robosac.sac.sac import SACConfig

    obs, act = spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (2,), np.float32)
    settings = LearnerSettings(batch_size=8, learning_starts=16, replay_capacity=40, flush_every=10, checkpoint_every_s=600.0,
                               publish_every=5, idle_sleep_s=0.001)
    rng = np.random.default_rng(0)

    def learner() -> Any:
        return LearnerActor(str(tmp_path), obs, act, SACConfig(hidden=(16, 16)), settings)

    first = learner()
    _feed(first, 0, 100, rng)
    wait_for(lambda: first.agent.updates >= 100, 60, "100 updates on 100 transitions", poll_s=0.3)
    before = first.stop()
    chunks = sorted(p.name for p in (tmp_path / "replay" / "a").glob("chunk_*.npz"))
    assert before["transitions"] == 100 and chunks[0] != "chunk_000000.npz", chunks  # the oldest rows were dropped

    second = learner()
    try:
        s = second.stats()
        _feed(second, 100, 30, rng)
        wait_for(lambda: second.agent.updates >= 130, 30, "updates to follow the 30 new transitions", poll_s=0.3)
        assert second.stats()["error"] is None and s["node_id"] is None  # in-process: no Ray started
        assert s["restored_transitions"] < 100 and s["transitions"] == 100 and s["per_robot"]["a"]["transitions"] == 100, s
        assert s["restored_from_updates"] == before["updates"]
    finally:
        second.stop()


# ---- the two-twin scenario -------------------------------------------------------------------------


def _listening_addresses(pids: set[int]) -> set[str]:
    """Local addresses of the TCP sockets in LISTEN state that these processes hold (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    addrs = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                raw = bytes.fromhex(f[1].split(":")[0])
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # kernel words are little-endian
                ip = ipaddress.ip_address(raw)
                addrs.add(str(getattr(ip, "ipv4_mapped", None) or ip))
    return addrs


@pytest.fixture(scope="module")
def cluster():
    """A local Ray cluster (robosac's own `--cluster local` start) advertising two robots, and their twins."""
    twins: dict[str, TwinProcess] = {}
    errors: list[BaseException] = []

    def start(name: str) -> None:
        try:
            twins[name] = TwinProcess(CLAW, camera_fps=2.0)  # state only: the camera is not read
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=start, args=(n,)) for n in ("claw1", "claw2")]
    for t in threads:
        t.start()
    try:
        info = connect(parse_cluster("local"), num_cpus=2, resources={"robot:claw1": 1, "robot:claw2": 1})
        for t in threads:
            t.join()
        assert not errors, errors
        yield info, twins
    finally:
        for t in threads:
            t.join()
        ray.shutdown()
        # Finalise the driver's leftover Ray handles now, while Ray's module state is whole, not at
        # a random later allocation in another test's thread.
        gc.collect()
        for tw in twins.values():
            tw.stop()


def _poll_until(run: DistributedRun, pred: Callable[[dict], bool], timeout: float, what: str) -> dict:
    def check() -> dict | None:
        snap = run.poll()
        return snap if pred(snap) else None

    return wait_for(check, timeout, what, poll_s=0.3)  # each poll is a round of calls to the actors


def _thread_priorities(pid: int) -> list[int]:
    """SCHED_FIFO priority of each thread of a process (0: a normal thread)."""
    return [t["priority"] if t["policy"] == os.SCHED_FIFO else 0 for t in proc_threads(pid)]


def _robot(snap: dict, name: str) -> dict:
    return snap["robots"].get(name, {})


def _loop_priorities(run: DistributedRun) -> dict[str, list[int]] | None:
    """Each robot's loop-process thread priorities, from a round both collectors answered; None if
    one did not (a round keeps a silent robot's last figures) or its process ended before the read.
    A collector restarted meanwhile is caught by the restart counts the tests assert."""
    s = run.poll()
    if not all(_robot(s, r).get("reachable") for r in ("claw1", "claw2")):
        return None
    try:
        return {r: _thread_priorities(_robot(s, r)["loop_pid"]) for r in ("claw1", "claw2")}
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def scenario(cluster, tmp_path_factory) -> dict[str, Any]:
    info, twins = cluster
    out = tmp_path_factory.mktemp("distributed") / "run"
    rec: dict[str, Any] = {"out": out, "info": info}
    robots = [RobotSpec("claw1", twins["claw1"].serial), RobotSpec("claw2", twins["claw2"].serial)]
    run = DistributedRun(ENV_ID, load_config(CLAW), robots, CFG, out, bus_settings=BUS, describe={"target": str(CLAW)})
    t0 = time.monotonic()
    try:
        run.start()
        rec["start_s"] = time.monotonic() - t0

        # 1. Both robots feed the learner; both act with published weights.
        def feeding(s: dict) -> bool:
            per = s["learner"].get("per_robot", {})
            return (s["learner"].get("updates", 0) > 20 and all(per.get(r, {}).get("transitions", 0) >= 40 for r in ("claw1", "claw2"))
                    and all(_robot(s, r).get("acting_version", 0) > 1 for r in ("claw1", "claw2")))

        rec["feeding"] = _poll_until(run, feeding, 60, "both robots feeding a training learner")
        rec["listening"] = _listening_addresses({os.getpid(), *descendants(os.getpid())})
        rec["loop_threads"] = wait_for(lambda: _loop_priorities(run), 30, "both robots' loop processes answering", poll_s=0.3)

        # 2. Kill claw1's collector; Ray restarts it; claw2 keeps going.
        before = run.poll()
        rec["kill_collector_before"] = before
        ray.kill(run.collectors["claw1"], no_restart=False)

        def claw1_back(s: dict) -> bool:
            r = _robot(s, "claw1")
            # claw2's figures are read in the same round: a round where its actor did not answer in
            # time (restart start-up shares the 2 cores) keeps its last ones, so it must be reachable.
            r2 = _robot(s, "claw2")
            return (r.get("reachable") and r["stream"] != _robot(before, "claw1")["stream"] and r["steps"] >= 20
                    and s["learner"]["per_robot"]["claw1"]["transitions"] >= before["learner"]["per_robot"]["claw1"]["transitions"] + 20
                    and r2.get("reachable") and r2["steps"] > _robot(before, "claw2")["steps"] + 20)

        rec["collector_back"] = _poll_until(run, claw1_back, 60, "claw1's collector restarted and delivering, claw2 still stepping")
        rec["collector_restarts"] = dict(run.collector_restarts)

        # 3. Kill the learner once it has checkpointed; Ray restarts it. The collectors keep their
        # own record of the outage (their figures when the link dropped and when it came back).
        # Killed early in both robots' episodes, so the outage (about 1 s) is mostly stepping, not a
        # reset (which pauses stepping for 1-2 s and would leave little to measure).
        def checkpointed_mid_episode(s: dict) -> bool:
            return s["learner"]["last_checkpoint_updates"] > 0 and all(
                _robot(s, r).get("running") and 5 <= _robot(s, r).get("episode_step", -1) <= 60 for r in ("claw1", "claw2"))

        before = _poll_until(run, checkpointed_mid_episode, 60, "a learner checkpoint, both robots early in an episode")
        rec["kill_learner_before"] = before
        rec["learner_killed_at"] = time.monotonic()
        ray.kill(run.learner, no_restart=False)

        def restored_and_caught_up(s: dict) -> bool:
            ls = s["learner"]
            return ls["learner_id"] != before["learner"]["learner_id"] and all(
                ls["per_robot"][r]["transitions"] >= before["learner"]["per_robot"][r]["transitions"] + 20
                and _robot(s, r)["outbox"]["unsent"] < 20
                # and acting with its weights (a collector pulls them a publish or two later)
                and _robot(s, r).get("acting_learner_id") == ls["learner_id"] for r in ("claw1", "claw2"))

        rec["learner_back"] = _poll_until(run, restored_and_caught_up, 90, "the restored learner caught up")
        rec["learner_restarts"] = run.learner_restarts
        rec["summary"] = run.finish()
        rec["final_robots"] = {n: run.robot_stats[n] for n in ("claw1", "claw2")}
        rec["wall_s"] = time.monotonic() - t0
    finally:
        run.close()
    return rec


def test_local_cluster_listens_on_loopback_only(scenario: dict) -> None:
    info = scenario["info"]
    assert info["node_ip"] == "127.0.0.1" and info["gcs_address"].startswith("127.0.0.1:")
    # Every socket listening in this test's process tree (Ray's GCS, raylet, workers, the twins'
    # camera servers), taken while both collectors and the learner ran:
    assert scenario["listening"] and all(ipaddress.ip_address(a).is_loopback for a in scenario["listening"]), scenario["listening"]


def test_two_twin_claws_feed_one_learner(scenario: dict) -> None:
    s = scenario["feeding"]
    ls = s["learner"]
    assert ls["updates"] > 20 and ls["version"] > 1 and ls["error"] is None
    # The same update statistics as the single-machine learner; recon_loss None (no decoder here).
    assert math.isfinite(ls["critic_loss"]) and "recon_loss" in ls and ls["recon_loss"] is None, ls
    for r in ("claw1", "claw2"):
        rob = _robot(s, r)
        assert rob["error"] is None and rob["running"] and rob["link"]["up"]
        assert rob["acting_version"] > 1 and rob["warm"]  # acting with learned weights, not random actions
        assert ls["per_robot"][r]["transitions"] >= 40
        # Once running, every thread of the robot's loop process is real-time (the loop 50, the
        # others 49: they share its interpreter lock); the start-up before it was not (it would
        # have starved the twins).
        prio = scenario["loop_threads"][r]
        if rob["scheduling"].startswith("SCHED_FIFO"):
            assert rob["scheduling"] == "SCHED_FIFO 50" and 50 in prio and 49 in prio and set(prio) <= {49, 50}, prio
        else:
            assert set(prio) == {0}, prio
    out = scenario["out"]
    assert (out / "learner.pt").exists() and json.loads((out / "run.json").read_text())["distributed"] is True


def test_a_killed_collector_is_restarted_and_the_run_continues(scenario: dict) -> None:
    before, back = scenario["kill_collector_before"], scenario["collector_back"]
    assert scenario["collector_restarts"]["claw1"] == 1 and scenario["collector_restarts"]["claw2"] == 0
    new, old = _robot(back, "claw1"), _robot(before, "claw1")
    assert new["stream"] != old["stream"] and new["pid"] != old["pid"]  # a new incarnation, a new process
    assert new["running"] and new["error"] is None
    # The loop runs in a process of its own (its interpreter lock is not the actor's), and the new
    # incarnation removed the killed one's shared-memory segments.
    assert new["loop_pid"] not in (new["pid"], old["loop_pid"]) and old["loop_pid"] != old["pid"]
    assert not any(Path("/dev/shm", name).exists() for name in old["segments"]), old["segments"]
    # claw2 never stopped: same incarnation, more steps, more transitions at the learner.
    assert _robot(back, "claw2")["stream"] == _robot(before, "claw2")["stream"]
    assert _robot(back, "claw2")["steps"] > _robot(before, "claw2")["steps"] + 20
    assert back["learner"]["per_robot"]["claw2"]["transitions"] > before["learner"]["per_robot"]["claw2"]["transitions"] + 20
    assert back["learner"]["learner_id"] == before["learner"]["learner_id"]  # the learner was untouched


def test_a_killed_learner_is_restored_while_both_robots_keep_running_safely(scenario: dict) -> None:
    before, back = scenario["kill_learner_before"], scenario["learner_back"]
    assert scenario["learner_restarts"] == 1
    ls = back["learner"]
    assert ls["learner_id"] != before["learner"]["learner_id"] and ls["pid"] != before["learner"]["pid"]
    # Restored from its checkpoint and the replay chunks (not from scratch), then trained on.
    assert 0 < ls["restored_from_updates"] <= before["learner"]["updates"]
    assert 0 < ls["restored_transitions"] <= before["learner"]["transitions"]
    assert ls["updates"] > ls["restored_from_updates"] and ls["version"] > 1
    rate_hz = load_config(CLAW).control.rate_hz
    stepped_through = []
    for r in ("claw1", "claw2"):
        fin = scenario["final_robots"][r]
        outages = [o for o in fin["link"]["outages"] if o["t_up"] > scenario["learner_killed_at"]]
        assert outages, f"{r} never saw its link drop"
        o = outages[0]  # the learner's restart
        down_s = o["t_up"] - o["t_down"]
        a, b = o["first"], o["recovered"]
        # The control loop kept its rate through the outage, outside any reset it made meanwhile (a
        # reset moves the robot for 1-2 s without env steps) ...
        # (A limit stop can still end an episode early and start a reset inside the outage.)
        stepping_s = down_s - (b["reset_s"] - a["reset_s"])
        stepped_through.append(stepping_s > 0.3)
        assert b["steps"] - a["steps"] >= (max(1, int(0.5 * stepping_s * rate_hz)) if stepping_s > 0.3 else 0), (r, down_s, a, b)
        assert b["overruns"] - a["overruns"] <= 2  # the restarting learner competes for the same 2 cores here
        # ... buffered every transition it made meanwhile ...
        assert b["unsent"] >= b["steps"] - a["steps"]
        # ... and stayed safe: no fault, and no stop of the kind a stalled loop causes (bus fault,
        # e-stop); a limit stop ("safety stop: |current| ...") is the policy's and may happen any time.
        stops = [why for step, why in fin["safety_stop_log"] if a["steps"] <= step <= b["steps"]]
        assert all(why.startswith("safety stop:") for why in stops), stops
        assert fin["error"] is None and _robot(back, r)["running"]
        assert fin["acting_learner_id"] == ls["learner_id"]  # acting with the restored learner's weights
        # Afterwards every buffered transition was delivered: nothing dropped, nothing left.
        assert fin["outbox"]["dropped"] == 0 and fin["outbox"]["unsent"] == 0
        assert scenario["summary"]["robots"][r]["fault"] is None
    assert any(stepped_through), "the outage was all reset on both robots: nothing measured"


def test_replay_on_disk_holds_every_delivered_transition_once(scenario: dict) -> None:
    """Per robot, the chunks hold each stream's rows with consecutive sequence numbers: the rows the
    learner had not flushed when it was killed were resent by the collectors, none twice."""
    out = scenario["out"]
    for r in ("claw1", "claw2"):
        rows: dict[str, list] = {}
        for p in sorted((out / "replay" / r).glob("chunk_*.npz")):
            with np.load(p) as z:
                for k in ("stream", "seq", "step"):
                    rows.setdefault(k, []).append(z[k])
        stream, seq, step = (np.concatenate(rows[k]) for k in ("stream", "seq", "step"))
        assert list(step) == list(range(len(step)))
        fin = scenario["final_robots"][r]
        mine = seq[stream == fin["stream"]]
        assert list(mine) == list(range(fin["outbox"]["produced"])), f"{r}: rows of the last collector missing or repeated"
        assert scenario["summary"]["per_robot_transitions"][r] == len(step)


def test_cli_resume_continues_the_cluster_run(cluster, scenario: dict, capsys: pytest.CaptureFixture) -> None:
    """`robosac train CONFIG --cluster local --robot ... --resume DIR`: the CLI end to end on the
    running cluster (this process's connection is reused), continuing the scenario's run."""
    _, twins = cluster
    out, done = scenario["out"], scenario["summary"]["steps"]
    updates_before = scenario["summary"]["updates"]
    rc = cli.main(["train", str(CLAW), "--cluster", "local", "--robot", f"claw2,port={twins['claw2'].serial}",
                   "--steps", str(done + 30), "--learning-starts", "64", "--batch-size", "32", "--bus-margin-ms", "50",
                   "--resume", str(out), "--no-progress"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err[-3000:]
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["steps"] >= done + 30 and summary["updates"] > updates_before and summary["learner_restarts"] == 0
    assert summary["robots"]["claw2"]["fault"] is None
    kinds = [json.loads(line)["kind"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert kinds.count("resume") == 1 and kinds.count("summary") == 2
