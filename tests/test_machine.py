"""CPU cores and free memory, the one place the package reads them."""

from __future__ import annotations

import os

import pytest

from nnunetv2_topo import machine
from nnunetv2_topo.metrics import engine


def test_cpu_cores_follows_the_affinity_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert machine.cpu_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert machine.cpu_cores() == 1


def test_available_memory_reads_meminfo(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  100 kB\nMemAvailable:    2048 kB\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(meminfo if p == "/proc/meminfo" else p, *a, **k))
    assert machine.available_memory_bytes() == 2048 * 1024
    meminfo.write_text("MemTotal:  100 kB\n")
    assert machine.available_memory_bytes() is None


def test_engine_workers_use_the_same_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    assert engine.cpu_cores is machine.cpu_cores  # re-exported, not a copy
    monkeypatch.setattr(engine, "cpu_cores", lambda: 6)
    monkeypatch.setattr(engine, "available_memory_bytes", lambda: 10 * engine.ENGINE_BYTES_PER_VOXEL * 1000)
    assert engine.auto_workers(n_tasks=8, tile_voxels=1000) == 6  # 8 tiles fit in memory, 6 cores
    assert engine.auto_workers(n_tasks=8, tile_voxels=4000) == 2  # 80 % of memory holds 2 tiles
    assert engine.auto_workers(n_tasks=1, tile_voxels=1000) == 1
