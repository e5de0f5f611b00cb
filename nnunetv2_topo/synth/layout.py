"""Write synthetic cases in the Kaggle layout of the Vesuvius surface-detection data.

::

    OUT/train.csv, OUT/test.csv        id,scroll_id
    OUT/train_images/<id>.tif          uint8 multi-page LZW TIFF (one page per z-slice)
    OUT/train_labels/<id>.tif          0 background, 1 surface, 2 unlabeled
    OUT/test_images/<id>.tif
    OUT/test_labels/<id>.tif           not in Kaggle's layout: ground truth for scoring test predictions

The folder is built in a hidden sibling and renamed into place when complete.
"""

from __future__ import annotations

import os
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.ids_csv import KaggleCSVError, Row, read_ids_csv, write_ids_csv
from nnunetv2_topo.io import staged_directory, write_tiff
from nnunetv2_topo.synth.generator import ScrollStyle, SheetTopology, synthesize_case


class SynthError(TopoError, ValueError):
    """Bad synthesis request (output folder, ids CSV, sizes); the message names what and the fix."""


REAL_SCROLL_COUNTS: dict[str, int] = {
    "34117": 382,
    "35360": 176,
    "26010": 130,
    "26002": 88,
    "44430": 17,
    "53997": 13,
}
"""Cases per scroll in the real train.csv; synthetic datasets draw scroll ids with these unequal weights."""


def scroll_counts(n: int) -> dict[str, int]:
    """Split ``n`` cases over a few real scroll ids, unequally (in the real proportions), each scroll >= 1 case."""
    k = min(len(REAL_SCROLL_COUNTS), max(1, (n + 1) // 2))
    names = list(REAL_SCROLL_COUNTS)[:k]
    weights = np.array([REAL_SCROLL_COUNTS[s] for s in names], dtype=float)
    extra = n - k  # one case each first, the rest in proportion, leftovers to the largest scrolls
    counts = np.floor(weights / weights.sum() * extra).astype(int)
    counts[: extra - counts.sum()] += 1
    return {s: int(c) + 1 for s, c in zip(names, counts)}


def plan_rows(
    cases: int, test_cases: int, seed: int, ids_from: str | os.PathLike | None = None
) -> tuple[list[Row], list[Row]]:
    """Train and test rows (ids and scroll ids), deterministic for ``seed``.

    With ``ids_from`` the train rows are the first ``cases`` rows of that CSV (real ids and scroll distribution).
    """
    if cases < 1:
        raise SynthError(f"--cases must be >= 1, got {cases}")
    if test_cases < 0:
        raise SynthError(f"--test-cases must be >= 0, got {test_cases}")
    rng = np.random.default_rng([int(seed), 7])
    if ids_from is not None:
        try:
            source = read_ids_csv(ids_from)
        except KaggleCSVError as exc:
            raise SynthError(str(exc)) from None
        if len(source) < cases:
            raise SynthError(
                f"{ids_from}: has {len(source)} rows but --cases {cases} were asked; use --cases {len(source)} or less"
            )
        train = source[:cases]
        scrolls = [r.scroll_id for r in train]
    else:
        scrolls = [s for s, c in scroll_counts(cases).items() for _ in range(c)]
        scrolls = [scrolls[i] for i in rng.permutation(len(scrolls))]
        train = []
    taken = {r.id for r in train}
    fresh = [str(i) for i in rng.choice(9_000_000, size=cases + test_cases + len(taken), replace=False) + 1_000_000]
    fresh = [i for i in fresh if i not in taken]
    if not train:
        train = [Row(i, s) for i, s in zip(fresh[:cases], scrolls)]
        fresh = fresh[cases:]
    test = [Row(fresh[j], scrolls[int(rng.integers(len(scrolls)))]) for j in range(test_cases)]
    return train, test


def _write_case(task: tuple[str, str, Row, tuple[int, int, int], int, int, SheetTopology]) -> str:
    root, split, row, shape, seed, index, topology = task
    rng = np.random.default_rng([int(seed), 0 if split == "train" else 1, index])
    case = synthesize_case(shape, rng, ScrollStyle.for_scroll(row.scroll_id, seed), topology=topology)
    write_tiff(Path(root) / f"{split}_images" / f"{row.id}.tif", case.image)
    write_tiff(Path(root) / f"{split}_labels" / f"{row.id}.tif", case.label)
    return row.id


def _prepare_target(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SynthError(f"{out}: exists and is not a folder; choose another --output")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise SynthError(f"{out}: folder exists and is not empty; choose another --output or pass --overwrite")


def write_kaggle_dataset(
    out: str | os.PathLike,
    cases: int = 8,
    shape: tuple[int, int, int] = (96, 96, 96),
    test_cases: int = 2,
    seed: int = 0,
    ids_from: str | os.PathLike | None = None,
    num_processes: int = 1,
    overwrite: bool = False,
    progress: bool = True,
    topology: SheetTopology | None = None,
) -> tuple[list[Row], list[Row]]:
    """Write a synthetic dataset in the Kaggle layout to ``out``; returns the (train, test) rows written.
    ``topology``: touching pairs, gaps and holes (default: the nominal :class:`SheetTopology`).

    Deterministic for ``seed``: the same arguments give byte-identical files. Nothing is left behind on failure.
    """
    out = Path(out)
    dims = tuple(int(s) for s in shape)
    if len(dims) != 3 or min(dims) < 10:
        raise SynthError(f"--shape must be three sizes >= 10 (Z Y X), got {' '.join(map(str, dims))}")
    shape = (dims[0], dims[1], dims[2])
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SynthError(f"--seed must be an integer >= 0, got {seed!r}")
    _prepare_target(out, overwrite)
    train, test = plan_rows(cases, test_cases, seed, ids_from)

    with staged_directory(out) as tmp:
        for sub in ("train_images", "train_labels", "test_images", "test_labels"):
            (tmp / sub).mkdir()
        write_ids_csv(tmp / "train.csv", train)
        write_ids_csv(tmp / "test.csv", test)
        topology = topology or SheetTopology()
        tasks = [(str(tmp), "train", r, shape, seed, i, topology) for i, r in enumerate(train)]
        tasks += [(str(tmp), "test", r, shape, seed, i, topology) for i, r in enumerate(test)]

        bar = tqdm(total=len(tasks), desc=f"synth {shape[0]}x{shape[1]}x{shape[2]}", disable=not progress)
        if num_processes > 1:
            with get_context("spawn").Pool(num_processes) as pool:
                for _ in pool.imap_unordered(_write_case, tasks):
                    bar.update()
        else:
            for t in tasks:
                _write_case(t)
                bar.update()
        bar.close()
    return train, test
