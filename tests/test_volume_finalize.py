"""Finalizing a whole-volume output without networks: one finalizer under the store lock, a kill at every step then a
rerun gives the identical output, exclusive creation, --overwrite that deletes nothing until every check passed and
never another part's work, the lock's stale takeover, and the ``finalize`` command."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import zarr

from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.scroll import finalize as fin
from nnunetv2_topo.scroll.lock import StoreLock

SHAPE, CHUNK = (16, 16, 14), 8
CONFIG = PostprocessConfig(threshold=0.5, hysteresis_high=0.7, min_component_size=20, plug_holes=True, patch_holes=0)


def _manifest(fmt: int = 2, **settings) -> dict:
    s = {"input": {"shape": list(SHAPE)}, "chunk": CHUNK, "pyramid": 1, "probabilities": True}
    s["postprocess"] = CONFIG.to_dict()
    s.update(settings)
    frame = {"scale": [7.91] * 3, "translation": [79.1, 0.0, 15.82], "units": ["micrometer"] * 3}
    return {"settings": s, "scan": {}, "grid": [], "output": {"zarr_format": fmt, "frame": frame}}


def _probability() -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    p = gaussian_filter(np.random.default_rng(3).random(SHAPE), 1.2)
    return (p - p.min()) / (p.max() - p.min())


def _predicted(url: str, fmt: int = 2, manifest: dict | None = None) -> str:
    """An output as 'predict' leaves it once every chunk is written (class codes, probabilities, markers)."""
    from nnunetv2_topo.scroll.grid import chunk_boxes
    from nnunetv2_topo.scroll.writer import ChunkWriter, prepare_output

    assert prepare_output(url, manifest or _manifest(fmt), SHAPE, CHUNK, True, True) is None
    writer = ChunkWriter(url, CHUNK, CONFIG.threshold, CONFIG.hysteresis_high, True, True)
    p = _probability()
    for box in chunk_boxes(SHAPE, (CHUNK,) * 3):
        writer.write(box, p[tuple(slice(lo, hi) for lo, hi in box)])
    return url


def _snapshot(url: str) -> dict:
    group = zarr.open_group(url, mode="r")
    out = {"attrs": dict(group.attrs), "files": sorted(str(p.relative_to(url)) for p in Path(url).rglob("*"))}
    for name in ("0", "1", "probabilities/0", "probabilities/1", "work_classes"):
        if name.split("/")[0] in group and name in group:
            out[name] = group[name][:].tobytes()
    return out


class SimulatedKill(BaseException):
    pass


@pytest.fixture
def base(tmp_path: Path) -> str:
    return _predicted(str(tmp_path / "base.zarr"))


def test_kill_at_every_step_then_rerun_gives_the_identical_output(base: str, tmp_path: Path, monkeypatch) -> None:
    steps: list[str] = []
    ref = shutil.copytree(base, tmp_path / "ref.zarr")
    monkeypatch.setattr(fin, "STEP_HOOK", steps.append)
    report = fin.finalize_volume(str(ref), progress=False)
    assert report.complete and report.finalized_here and report.driver["border_labels"] > 0
    expected = _snapshot(str(ref))
    assert not any(f.startswith(("work_", ".done", ".nnunetv2")) for f in expected["files"])
    assert expected["attrs"]["nnunetv2_topo"]["complete"] is True
    assert {"cleanup work_classes", "cleanup .done", "complete", "keep components:half"} <= set(steps)
    monkeypatch.setenv("NNUNETV2_TOPO_LOCK_STALE_S", "0.05")
    real_release = StoreLock.release
    for k, step in enumerate(steps):
        out = str(shutil.copytree(base, tmp_path / f"k{k}.zarr"))

        def kill(name: str, step=step) -> None:
            if name == step:
                raise SimulatedKill(name)

        monkeypatch.setattr(fin, "STEP_HOOK", kill)
        # a killed process leaves its lock behind (only its heartbeat stops)
        monkeypatch.setattr(StoreLock, "release", lambda self: self._stop and self._stop.set())
        with pytest.raises(SimulatedKill):
            fin.finalize_volume(out, progress=False)
        monkeypatch.setattr(fin, "STEP_HOOK", None)
        monkeypatch.setattr(StoreLock, "release", real_release)
        again = fin.finalize_volume(out, progress=False, wait_s=10)  # takes the stale lock over
        assert again.complete, step
        assert _snapshot(out) == expected, f"killed at {step!r}"


def test_two_parts_finishing_together_finalize_once(base: str, monkeypatch) -> None:
    entered, go = threading.Event(), threading.Event()

    def pause(name: str) -> None:
        if name == "keep components" and not entered.is_set():
            entered.set()
            assert go.wait(30)

    monkeypatch.setattr(fin, "STEP_HOOK", pause)
    first: list = []
    thread = threading.Thread(target=lambda: first.append(fin.finalize_volume(base, progress=False)))
    thread.start()
    try:
        assert entered.wait(30)
        second = fin.finalize_volume(base, progress=False)
        assert second.busy and not second.complete and not second.finalized_here
        assert "finalizing" in second.line(base)
        assert "work_classes" in zarr.open_group(base, mode="r")  # the second one deleted nothing
    finally:
        go.set()
        thread.join()
    assert first[0].complete and first[0].finalized_here
    again = fin.finalize_volume(base, progress=False)
    assert again.complete and not again.finalized_here


def test_finalize_waits_for_every_chunk(tmp_path: Path) -> None:
    url = _predicted(str(tmp_path / "o.zarr"))
    marker = next((Path(url) / ".done").iterdir())
    marker.unlink()
    report = fin.finalize_volume(url, progress=False)
    assert not report.complete and report.missing == 1 and "1 chunk(s) not predicted" in report.line(url)
    assert zarr.open_group(url, mode="r").attrs["nnunetv2_topo"]["complete"] is False


def test_output_creation_is_exclusive(tmp_path: Path, monkeypatch) -> None:
    import time

    from nnunetv2_topo.scroll import writer

    url = str(tmp_path / "o.zarr")
    created: list[str] = []
    real = writer.create_array

    def slow_create(group, name, *a, **k):
        created.append(name)
        time.sleep(0.2)  # widen the window in which a second part could create the arrays too
        return real(group, name, *a, **k)

    monkeypatch.setattr(writer, "create_array", slow_create)
    barrier, results = threading.Barrier(2), []

    def part() -> None:
        barrier.wait()
        results.append(writer.prepare_output(url, _manifest(), SHAPE, CHUNK, True, True, num_parts=2))

    threads = [threading.Thread(target=part) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(created) == ["0", "0", "work_classes"]  # level 0, probabilities/0, classes: once
    assert sum(r is None for r in results) == 1  # one created it, the other resumed it


def test_overwrite_replaces_only_after_checks_and_never_another_parts_work(tmp_path: Path) -> None:
    from nnunetv2_topo.scroll.writer import ScrollOutputError, prepare_output

    url = _predicted(str(tmp_path / "o.zarr"))
    done = sorted(p.name for p in (Path(url) / ".done").iterdir())
    # same settings, another part with --overwrite: the other parts' chunks stay
    assert prepare_output(url, _manifest(), SHAPE, CHUNK, True, True, overwrite=True, num_parts=2) is not None
    assert sorted(p.name for p in (Path(url) / ".done").iterdir()) == done
    # other settings without --overwrite: refused, nothing deleted
    with pytest.raises(ScrollOutputError, match=r"other settings \(pyramid: 1 -> 2\).*--overwrite"):
        prepare_output(url, _manifest(pyramid=2), SHAPE, CHUNK, True, True)
    with pytest.raises(ScrollOutputError, match=r"zarr_format: 2 -> 3"):
        prepare_output(url, _manifest(3), SHAPE, CHUNK, True, True)
    old = _manifest()
    del old["output"]  # an output of an earlier version (Zarr v3, no frame, probabilities as one array)
    with pytest.raises(ScrollOutputError, match="output layout: an earlier nnunetv2_topo version's"):
        prepare_output(str(_predicted(str(tmp_path / "old.zarr"), manifest=old)), _manifest(), SHAPE, CHUNK, True, True)
    assert sorted(p.name for p in (Path(url) / ".done").iterdir()) == done
    # other settings with --overwrite (all checks passed): replaced
    assert prepare_output(url, _manifest(pyramid=2), SHAPE, CHUNK, True, True, overwrite=True, num_parts=2) is None
    assert not (Path(url) / ".done").exists()
    assert zarr.open_group(url, mode="r").attrs["nnunetv2_topo"]["settings"]["pyramid"] == 2


@pytest.mark.e2e
def test_cli_overwrite_refused_by_a_check_keeps_the_old_output(tmp_path: Path, capsys) -> None:
    """The spacing check fails after the models load: --overwrite must not have deleted anything by then."""
    from ome_zarr.writer import write_multiscales_metadata

    from nnunetv2_topo.cli.main import main
    from nnunetv2_topo.testing.untrained import write_untrained_model_folder

    model = write_untrained_model_folder(tmp_path / "m", patch=(16, 16, 16))
    ome = str(tmp_path / "in.zarr")
    group = zarr.open_group(ome, mode="w")
    for k in (0, 1):
        group.create_array(str(k), shape=(20 // 2**k,) * 3, dtype="uint8")
    scales = [[{"type": "scale", "scale": [2.0**k] * 3}] for k in (0, 1)]
    datasets = [{"path": str(k), "coordinateTransformations": scales[k]} for k in (0, 1)]
    write_multiscales_metadata(group, datasets, axes=["z", "y", "x"])
    out = _predicted(str(tmp_path / "out.zarr"))
    before = _snapshot(out)
    argv = ["predict", "--input", ome, "--level", "1", "--output", out, "--model", str(model), "--device", "cpu"]
    assert main([*argv, "--quiet", "--overwrite"]) == 2
    assert "expect spacing" in capsys.readouterr().err
    assert _snapshot(out) == before


def test_lock_is_exclusive_and_taken_over_when_stale(tmp_path: Path, monkeypatch) -> None:
    from nnunetv2_topo.scroll.lock import LockBusyError, LockLostError, stale_seconds
    from nnunetv2_topo.scroll.writer import ScrollOutputError

    url = str(tmp_path / "o.zarr")
    a = StoreLock(url, "finalize", stale_s=0.3)
    assert a.try_acquire()
    b = StoreLock(url, "finalize", stale_s=0.3)
    assert not b.try_acquire()  # the heartbeat keeps it fresh
    with pytest.raises(LockBusyError, match="locked by another process"):
        b.acquire(0.4, poll_s=0.1)
    a._stop.set()  # a is killed: no more heartbeats
    a._thread.join()
    b.acquire(2, poll_s=0.1)
    with pytest.raises(LockLostError, match="taken over"):
        a.check()
    a.release()  # does not remove b's lock
    assert b.holder()["owner"] == b.token
    b.release()
    assert b.holder() is None
    for bad in ("x", "0"):
        monkeypatch.setenv("NNUNETV2_TOPO_LOCK_STALE_S", bad)
        with pytest.raises(ScrollOutputError, match="NNUNETV2_TOPO_LOCK_STALE_S"):
            stale_seconds()


def test_finalize_command(tmp_path: Path, capsys) -> None:
    from nnunetv2_topo.cli.main import main

    url = _predicted(str(tmp_path / "o.zarr"), fmt=3)
    assert main(["finalize", url, "--quiet"]) == 0
    assert "finalized in" in capsys.readouterr().out
    group = zarr.open_group(url, mode="r")
    assert group.attrs["ome"]["version"] == "0.5" and "image-label" in group.attrs["ome"]
    assert main(["finalize", url, "--quiet"]) == 0
    assert "complete" in capsys.readouterr().out
    assert main(["finalize", str(tmp_path / "missing.zarr")]) == 2
    assert "holds no output of 'nnunetv2_topo predict'" in capsys.readouterr().err
    assert main(["finalize", url, "--wait-seconds", "-1"]) == 2
    assert "--wait-seconds must be >= 0" in capsys.readouterr().err
