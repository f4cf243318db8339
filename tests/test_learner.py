"""SharedReplay / WeightStore in shared memory and the learner process (robosac.runtime)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from multiprocessing import shared_memory

import numpy as np
import pytest
import torch
from gymnasium import spaces

from _emu_util import wait_for
from robosac.persist import load_checkpoint
from robosac.runtime.learner import LearnerConfig, LearnerProcess, LearnerSupervisor, process_cpu_s
from robosac.runtime.shared import SharedReplay, WeightStore, actor_state, load_actor_state
from robosac.sac.replay import Replay
from robosac.sac.sac import SAC, SACConfig
from robosac.sac.spaces import parse_obs_space

OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = spaces.Box(-1.0, 1.0, (1,), np.float32)
SAC_CFG = SACConfig(hidden=(32, 32), actor_lr=1e-3, critic_lr=1e-3, alpha_lr=1e-3)


def _unlinked(name: str) -> bool:
    try:
        shared_memory.SharedMemory(name=name).close()
    except FileNotFoundError:
        return True
    return False


def _leaves(batch):
    out = {}
    for k, v in batch.items():
        if isinstance(v, dict):
            out.update({f"{k}.{s}": t for s, t in v.items()})
        else:
            out[k] = v
    return out


# ---- (a) SharedReplay ------------------------------------------------------------------------------


def test_shared_replay_round_trip_pixels_wraparound_and_replay_format():
    space = spaces.Dict({"pixels": spaces.Box(0, 255, (20, 20, 3), np.uint8), "state": spaces.Box(-9, 9, (3,), np.float32)})
    spec = parse_obs_space(space)
    writer = SharedReplay.create(spec, act_dim=2, capacity=8)
    reader = SharedReplay.attach(writer.name)
    try:
        def obs(v):
            return {"pixels": np.full((20, 20, 3), v % 256, np.uint8), "state": np.full(3, v, np.float32)}

        for i in range(13):  # wraps: slots hold transitions 5..12
            writer.add(obs(i), np.full(2, i, np.float32), float(i), obs(i + 100), i % 3 == 0, policy_version=1000 + i)
        assert reader.written == 13 and len(reader) == 8
        for slot in range(8):
            i = slot + 8 if slot + 8 < 13 else slot
            assert reader.arrays["obs.state"][slot].tolist() == [i] * 3
            assert reader.arrays["obs.pixels"][slot].shape == (3, 20, 20)  # stored channels-first, as Replay
            assert np.all(reader.arrays["next_obs.pixels"][slot] == (i + 100) % 256)
            assert reader.arrays["policy_version"][slot] == 1000 + i
            assert bool(reader.arrays["terminated"][slot]) == (i % 3 == 0)

        ref = Replay(spec, act_dim=2, capacity=8, seed=0)
        for i in range(13):
            ref.add(obs(i), np.full(2, i, np.float32), float(i), obs(i + 100), i % 3 == 0)
        want = _leaves(ref.sample(64))
        batch = reader.sample(64, np.random.default_rng(0))
        got = _leaves(batch)
        assert got.keys() == want.keys()
        for k in want:
            assert (got[k].dtype, got[k].shape) == (want[k].dtype, want[k].shape), k
        v = got["reward"].numpy()
        assert set(v.tolist()) <= set(range(6, 13))  # the slot the writer fills next (5) is never sampled
        assert len(set(v.tolist())) >= 4
        assert np.all(got["obs.state"].numpy() == v[:, None]) and np.all(got["action"].numpy() == v[:, None])
        assert np.all(got["obs.pixels"].numpy() == (v % 256).astype(np.uint8)[:, None, None, None])
        assert np.all(got["next_obs.pixels"].numpy() == ((v + 100) % 256).astype(np.uint8)[:, None, None, None])
        assert np.all(got["terminated"].numpy() == (v.astype(int) % 3 == 0))
        assert np.all(reader.sample(8, np.random.default_rng(1), with_version=True)["policy_version"].numpy() >= 1006)

        agent = SAC(space, spaces.Box(-1, 1, (2,), np.float32), SACConfig(hidden=(16,), feature_dim=8, conv_channels=(4, 4, 4)), seed=0)
        stats = agent.update(batch)  # accepted unchanged by the agent
        assert np.isfinite(list(stats.values())).all()
    finally:
        reader.close()
        writer.close()
    assert _unlinked(writer.name)


def test_shared_replay_extra_fields_and_a_writer_attached_from_elsewhere():
    """The distributed robot process's ring: the creator (the actor) reads, a process that attached
    with the spec writes, rows carry extra fields, and oldest_intact says which rows a lap spoiled."""
    spec = parse_obs_space(OBS)
    owner = SharedReplay.create(spec, act_dim=1, capacity=4, extra={"episode": "int64", "late_s": "float64", "end": "bool"})
    writer = SharedReplay.attach(owner.name, spec=spec)
    try:
        for i in range(6):
            writer.add(np.full(3, i, np.float32), np.full(1, i, np.float32), float(i), np.full(3, i + 1, np.float32), False,
                       policy_version=i, episode=i // 2, late_s=i / 1000, end=i % 2 == 1)
        assert owner.written == 6 and owner.oldest_intact() == 3  # rows 0..1 overwritten, 2's slot is next
        row = owner.row(5)
        assert row["episode"] == 2 and row["late_s"] == pytest.approx(0.005) and bool(row["end"]) and row["policy_version"] == 5
        assert row["obs.state"].tolist() == [5.0] * 3 and row["next_obs.state"].tolist() == [6.0] * 3
        assert owner.row(3)["episode"] == 1 and not bool(owner.row(4)["end"])
        reader = SharedReplay.attach(owner.name)  # no spec: a reader only
        with pytest.raises(RuntimeError, match="ObsSpec"):
            reader.add(np.zeros(3), np.zeros(1), 0.0, np.zeros(3), False)
        reader.close()
    finally:
        writer.close()
        owner.close()
    assert _unlinked(owner.name)


def test_shared_replay_reader_never_sees_a_half_written_row():
    """A writer thread laps a small ring while the reader samples; every row must be one transition."""
    spec = parse_obs_space(OBS)
    writer = SharedReplay.create(spec, act_dim=1, capacity=16)
    reader = SharedReplay.attach(writer.name)
    for i in range(16):
        writer.add(np.full(3, i, np.float32), np.full(1, i, np.float32), float(i), np.full(3, i, np.float32), False)
    stop = threading.Event()

    def write():
        i = 16
        while not stop.is_set():
            writer.add(np.full(3, i, np.float32), np.full(1, i, np.float32), float(i), np.full(3, i, np.float32), False)
            i += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as possible
    t = threading.Thread(target=write)
    t.start()
    rng = np.random.default_rng(0)
    bad = samples = 0
    try:
        t_end = time.monotonic() + 0.7
        while time.monotonic() < t_end:
            b = _leaves(reader.sample(16, rng))
            r = b["reward"].numpy()
            for k in ("obs.state", "next_obs.state", "action"):
                bad += int(np.sum(np.any(b[k].numpy() != r[:, None], axis=1)))
            samples += 1
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
        written = writer.written
        reader.close()
        writer.close()
    assert written > 1000 and samples > 50
    assert bad == 0


def test_weight_store_carries_a_crossq_actor_with_its_batch_norm_statistics():
    """A CrossQ actor's state includes running statistics and a 0-d pass counter; what the
    collector loads must act exactly as the learner's agent."""
    import dataclasses

    cfg = dataclasses.replace(SAC_CFG, crossq=True)
    learner, collector = SAC(OBS, ACT, cfg, seed=0), SAC(OBS, ACT, cfg, seed=1)
    store = WeightStore.create(actor_state(learner))
    learner.actor.train()
    learner.actor(torch.randn(64, 3) + 2.0)  # moves the running statistics away from their start
    learner.actor.eval()
    store.publish(actor_state(learner))
    reader = WeightStore.attach(store.name)
    load_actor_state(collector, reader.latest(0)[1])
    obs = np.array([0.3, -0.2, 0.9], np.float32)
    assert np.array_equal(learner.act(obs, deterministic=True), collector.act(obs, deterministic=True))
    assert collector.actor.net[0].passes.item() == 1
    reader.close()
    store.close()


def test_weight_store_never_returns_a_torn_copy():
    template = {"a": torch.zeros(64, 64), "b": torch.zeros(3)}
    store = WeightStore.create(template)
    reader = WeightStore.attach(store.name)
    assert reader.latest(0) is None and reader.version == 0
    stop = threading.Event()

    def publish():
        v = 0
        while not stop.is_set():
            v += 1
            store.publish({"a": torch.full((64, 64), float(v)), "b": torch.full((3,), float(v))}, updates=v)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    t = threading.Thread(target=publish)
    t.start()
    seen, torn, last = 0, 0, 0
    try:
        t_end = time.monotonic() + 0.5
        while time.monotonic() < t_end:
            got = reader.latest(last)
            if got is None:
                continue
            version, state = got
            assert version > last
            torn += int(not (torch.all(state["a"] == version) and torch.all(state["b"] == version)))
            assert reader.last_meta["updates"] == version
            last, seen = version, seen + 1
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert seen > 20 and torn == 0
    assert reader.latest(store.version) is None
    with pytest.raises(ValueError):
        store.publish({"a": torch.zeros(2), "b": torch.zeros(3)})
    reader.close()
    store.close()
    assert _unlinked(store.name)


def _publish_forever(name: str) -> None:
    """A learner's publishing loop, to be SIGKILLed at a random point (runs in a forked child)."""
    store = WeightStore.attach(name)
    state = {"a": torch.from_numpy(np.full((1024, 1024), -1.0, np.float32)), "b": torch.from_numpy(np.full(3, -1.0, np.float32))}
    while True:
        store.publish(state)


def test_a_writer_killed_mid_publish_leaves_the_store_readable_for_the_next_one():
    """A learner SIGKILLed while it copies weights in leaves that slot's seqlock odd. The restarted
    learner's publishes must still be readable, each one (the collector gave up on a store whose
    latest slot stayed odd, and its run ended: seen in the suite, session 40)."""
    import multiprocessing as mp

    template = {"a": torch.zeros(1024, 1024), "b": torch.zeros(3)}  # 4 MB: a kill most likely lands mid-copy
    store = WeightStore.create(template)
    reader = WeightStore.attach(store.name)
    rng = np.random.default_rng(0)
    mid_write_kills = 0
    try:
        for _ in range(20):
            child = mp.get_context("fork").Process(target=_publish_forever, args=(store.name,), daemon=True)
            child.start()
            before = store.version
            deadline = time.monotonic() + 10
            while store.version < before + 3 and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(float(rng.uniform(0, 0.003)))
            os.kill(child.pid, signal.SIGKILL)
            child.join()
            assert store.version >= before + 3, "the child did not publish"
            mid_write_kills += any(int(h[0]) % 2 for h in store._slot_hdr)  # seq odd: killed mid-copy
            for _ in range(3):  # the restarted learner, publishing into both slots in turn
                v = store.publish({"a": torch.full((1024, 1024), float(store.version + 1)), "b": torch.zeros(3)})
                got = reader.latest(v - 1)
                assert got is not None and got[0] == v and torch.all(got[1]["a"] == v)
            if mid_write_kills >= 3:
                break
    finally:
        reader.close()
        store.close()
    assert mid_write_kills >= 3  # the case under test did happen


# ---- learner process ---------------------------------------------------------------------------------


def _target(o: np.ndarray) -> float:
    return float(np.clip(o[0] - 0.5 * o[1], -1, 1))


class Feeder:
    """The collector stand-in: adds synthetic transitions (reward = -|a - target(obs)|) at ``rate_hz``."""

    def __init__(self, replay: SharedReplay, rate_hz: float, seed: int = 0):
        self.replay, self.period = replay, 1.0 / rate_hz
        self.rng = np.random.default_rng(seed)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def add(self, n: int = 1) -> None:
        for _ in range(n):
            o = self.rng.uniform(-1, 1, 3).astype(np.float32)
            a = self.rng.uniform(-1, 1, 1).astype(np.float32)
            self.replay.add(o, a, -abs(float(a[0]) - _target(o)), self.rng.uniform(-1, 1, 3).astype(np.float32), False)

    def _run(self) -> None:
        nxt = time.monotonic()
        while not self.stop.is_set():
            self.add()
            nxt += self.period
            time.sleep(max(0.0, nxt - time.monotonic()))

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.fixture
def runtime(tmp_path):
    """(replay, weights, make_learner) with the segments unlinked afterwards."""
    spec = parse_obs_space(OBS)
    replay = SharedReplay.create(spec, act_dim=1, capacity=5000)
    weights = WeightStore.create(actor_state(SAC(OBS, ACT, SAC_CFG, seed=0)))
    learners = []

    def make(**kw) -> LearnerProcess:
        cfg = LearnerConfig(**{"batch_size": 32, "learning_starts": 100, "publish_every": 5, **kw})
        lp = LearnerProcess(replay.name, weights.name, OBS, ACT, tmp_path / "learner.pt", SAC_CFG, cfg)
        learners.append(lp)
        return lp

    yield replay, weights, make
    for lp in learners:
        lp.stop(timeout=10)
    replay.close()
    weights.close()
    assert _unlinked(replay.name) and _unlinked(weights.name)


def test_learner_updates_publishes_and_respects_the_update_cap(runtime):
    replay, weights, make = runtime
    cap = 0.5
    lp = make(max_updates_per_step=cap).start()
    feeder = Feeder(replay, rate_hz=250)
    feeder.add(50)  # below learning_starts: no update may happen
    wait_for(lambda: lp.started_beating, 30, "learner start-up")
    time.sleep(0.2)
    assert lp.stats()["updates"] == 0 and lp.stats()["transitions"] == 50
    collector = WeightStore.attach(weights.name)
    version, pickups, idle_cost, pickup_cost, staleness, cap_checks = 0, 0, [], [], [], []
    try:
        with feeder:
            t_end = time.monotonic() + 4.0
            while time.monotonic() < t_end:
                t0 = time.perf_counter()
                got = collector.latest(version)
                dt = time.perf_counter() - t0
                if got is None:
                    idle_cost.append(dt)
                else:
                    if version:  # (the start-up publication predates this polling loop)
                        staleness.append(time.monotonic() - collector.last_meta["publish_time"])
                    pickup_cost.append(dt)
                    assert got[0] > version
                    version, pickups = got[0], pickups + 1
                u = lp.stats()["updates"]
                cap_checks.append((u, replay.written))  # updates read first: written can only grow
                time.sleep(0.002)
        stats = lp.stats()
    finally:
        collector.close()
    print(
        f"\nlearner: {stats['updates']} updates over {replay.written} transitions, {pickups} pickups; "
        f"latest() idle median {np.median(idle_cost) * 1e6:.1f} us, pickup median {np.median(pickup_cost) * 1e6:.1f} us "
        f"max {max(pickup_cost) * 1e3:.2f} ms; staleness median {np.median(staleness) * 1e3:.2f} ms max {max(staleness) * 1e3:.1f} ms"
    )
    assert stats["alive"] and stats["updates"] >= 100
    assert pickups >= 10 and version == collector.last_meta["version"]
    assert np.median(idle_cost) < 1e-3 and np.median(pickup_cost) < 5e-3
    assert max(staleness) < 1.0
    assert all(u <= cap * n for u, n in cap_checks)
    # The cap is what limits it (the learner is idle otherwise), not a slow learner.
    u, n = cap_checks[-1]
    assert u >= 0.6 * cap * n, (u, n)


def _count_and_relabel(path: str, batch: dict, rng: np.random.Generator) -> dict:
    """A relabel hook for the test: appends the batch size to ``path``, sets every reward to 5."""
    with open(path, "a") as f:
        f.write(f"{len(batch['reward'])}\n")
    return {**batch, "reward": torch.full_like(batch["reward"], 5.0)}


def test_learner_applies_the_relabel_hook_to_every_batch(runtime, tmp_path):
    import functools

    replay, _, make = runtime
    log = tmp_path / "relabel.log"
    lp = make(relabel=functools.partial(_count_and_relabel, str(log))).start()
    Feeder(replay, rate_hz=1).add(300)
    wait_for(lambda: lp.stats()["updates"] >= 50, 60, "50 updates")
    lp.stop(timeout=10)
    calls = log.read_text().split()
    assert set(calls) == {"32"} and len(calls) == lp.stats()["updates"]


def test_supervisor_restarts_a_killed_or_hung_learner_from_its_checkpoint(runtime, tmp_path):
    replay, weights, make = runtime
    lp = make(checkpoint_every_s=0.3, max_updates_per_step=4.0)
    sup = LearnerSupervisor(lp, heartbeat_timeout_s=1.0)
    lp.start()
    with Feeder(replay, rate_hz=200) as feeder:
        feeder.add(200)
        wait_for(lambda: lp.stats()["checkpoints"] >= 2 and lp.stats()["updates"] > 50, 30, "two checkpoints")
        assert sup.check() is None and sup.restarts == 0
        before = lp.stats()
        os.kill(lp.pid, signal.SIGKILL)
        wait_for(lambda: lp.process.exitcode is not None, 5, "the kill")
        ck_updates = load_checkpoint(lp.checkpoint_path)["counters"]["updates"]
        assert 0 < ck_updates <= before["updates"] + 5
        msg = sup.check()
        assert msg is not None and "SIGKILL" in msg and sup.restarts == 1 and sup.messages == [msg]
        wait_for(lambda: lp.started_beating, 30, "restarted learner")
        resumed = lp.stats()
        assert resumed["resumed_from_updates"] == ck_updates  # continues from the checkpoint, not from 0
        v0 = weights.version
        assert v0 > before["weights_version"]  # versions keep rising across the restart
        wait_for(lambda: lp.stats()["updates"] > ck_updates + 20 and weights.version > v0 + 2, 20, "publishing resumes")
        assert sup.check() is None and sup.restarts == 1

        # A hung learner (stopped, alive, silent) is noticed by its stale heartbeat.
        wait_for(lambda: load_checkpoint(lp.checkpoint_path)["counters"]["updates"] > ck_updates, 10, "a new checkpoint")
        os.kill(lp.pid, signal.SIGSTOP)
        ck2_updates = load_checkpoint(lp.checkpoint_path)["counters"]["updates"]  # it cannot write any more
        t0 = time.monotonic()
        msg = None
        while msg is None and time.monotonic() - t0 < 5:
            msg = sup.check()
            time.sleep(0.05)
        assert msg is not None and "heartbeat stale" in msg and "no CPU used" in msg and sup.restarts == 2
        assert 0.9 < time.monotonic() - t0 < 3.0  # 1 s of silence, then 1 s (cpu_window_s) without CPU
        wait_for(lambda: lp.started_beating, 30, "second restart")
        assert lp.stats()["resumed_from_updates"] == ck2_updates > ck_updates
        wait_for(lambda: lp.stats()["updates"] > lp.stats()["resumed_from_updates"] + 10, 20, "updates after 2nd restart")


def _busy_relabel(batch: dict, rng: np.random.Generator) -> dict:
    """A batch hook that keeps the learner's CPU busy for 0.4 s: a learner slowed down, not hung."""
    end = time.process_time() + 0.4
    while time.process_time() < end:
        pass
    return batch


def test_supervisor_leaves_a_silent_learner_that_is_computing(runtime):
    """Starved of CPU (a busy computer, a high nice) a learner is slow, not hung: restarting it
    would throw away its work since the last checkpoint, again and again under sustained load."""
    t0 = process_cpu_s(os.getpid())
    while process_cpu_s(os.getpid()) < t0 + 0.05:
        pass
    assert process_cpu_s(os.getpid()) - t0 < 1.0 and process_cpu_s(2**22 + 1) is None  # no such process
    replay, weights, make = runtime
    lp = make(relabel=_busy_relabel, max_updates_per_step=4.0)
    sup = LearnerSupervisor(lp, heartbeat_timeout_s=0.1, cpu_window_s=0.1, busy_timeout_s=2.0)
    lp.start()
    with Feeder(replay, rate_hz=200) as feeder:
        feeder.add(200)
        wait_for(lambda: lp.stats()["updates"] >= 1, 30, "a first update")
        silent, updates0, t_end = 0, lp.stats()["updates"], time.monotonic() + 3.0
        while time.monotonic() < t_end:
            assert sup.check() is None, sup.messages
            silent += lp.stats()["heartbeat_age_s"] > 0.25  # past the timeout and more than a window
            time.sleep(0.02)
        # Silent past the timeout time and again, and learning all the while.
        assert silent > 30 and lp.stats()["updates"] >= updates0 + 4 and sup.restarts == 0
        # Silent longer than busy_timeout_s, though busy: a loop that never returns.
        sup.busy_timeout_s = 0.3
        msg = wait_for(sup.check, 5, "a restart")
        assert "while using the CPU" in msg and sup.restarts == 1
        wait_for(lambda: lp.started_beating, 30, "the restarted learner")


def test_published_weights_act_like_the_learner(runtime):
    replay, weights, make = runtime
    lp = make(max_updates_per_step=2.0)
    lp.start()
    feeder = Feeder(replay, rate_hz=1000, seed=1)
    feeder.add(400)
    wait_for(lambda: lp.stats()["updates"] >= 300, 30, "300 updates")
    assert lp.stop(timeout=15) == 0  # final publish + checkpoint at the same parameters
    ck = load_checkpoint(lp.checkpoint_path)

    learner = SAC(OBS, ACT, SAC_CFG, seed=123)
    learner.load_state_dict(ck["agent"])
    collector = SAC(OBS, ACT, SAC_CFG, seed=7)
    store = WeightStore.attach(weights.name)
    try:
        version, state = store.latest(0)
    finally:
        store.close()
    assert store.last_meta["updates"] == ck["agent"]["updates"] == ck["counters"]["updates"] >= 300
    assert version == ck["counters"]["weights_version"]

    obs = np.random.default_rng(5).uniform(-1, 1, (64, 3)).astype(np.float32)
    fresh = np.stack([collector.act(o, deterministic=True) for o in obs])
    want = np.stack([learner.act(o, deterministic=True) for o in obs])
    assert not np.allclose(fresh, want, atol=1e-3)  # the comparison below is not vacuous
    load_actor_state(collector, state)
    got = np.stack([collector.act(o, deterministic=True) for o in obs])
    assert np.array_equal(got, want)
    torch.manual_seed(0)
    want_s = np.stack([learner.act(o) for o in obs])
    torch.manual_seed(0)
    got_s = np.stack([collector.act(o) for o in obs])
    assert np.array_equal(got_s, want_s)
