"""`robosac bench bus` runs end to end (short) and meets its byte goal."""

from __future__ import annotations

import argparse

from robosac.hal.bench import bench_bus, min_cycle_bytes


def test_min_cycle_bytes_from_packet_format() -> None:
    # 12 servos, 14-byte block: request 10+4+12, fast reply 8+12*18, sync write 10+4+12*5.
    assert min_cycle_bytes(12, 14, fast=True) == {"read_request": 26, "read_reply": 224, "write": 74, "total": 324}
    assert min_cycle_bytes(9, 14, fast=False)["read_reply"] == 9 * 25


def test_bench_bus_reports_both_sizes_at_minimum_bytes() -> None:
    out = bench_bus(argparse.Namespace(seconds=0.6))
    assert [r["servos"] for r in out["results"]] == [9, 12]
    for r in out["results"]:
        assert r["read"] == "fast_sync_read"
        assert r["bytes_per_cycle_min"] == r["min_bytes_per_cycle"]
        assert r["cycles_at_minimum"] + r["cycles_with_read_retry"] >= r["cycles"]
        assert r["median_ms"] > 0 and r["p99_ms"] >= r["median_ms"]
