"""Post-process, then score with the competition metric: one volume in memory, or a folder of predictions.

Used by the trainer's final validation, by ``nnunetv2_topo tune`` and by the benchmarks, so that "post-process a
folder, then score it" exists once.

In memory, :func:`score_prediction` computes the exact leaderboard score of one volume in this process and can
reuse Betti-matching counts: ``tile_cache`` maps ``(tile index, digest of the prediction tile)`` to that tile's
``[[m, p, g]]`` counts against the one ground truth of the case, so a prediction whose tile did not change (another
post-processing configuration that leaves it as it was) never runs the engine again. SurfaceDice and VOI are
always recomputed (cheap).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from nnunetv2_topo.metrics.leaderboard import SURFACE_TOLERANCE, binarize_pair
from nnunetv2_topo.metrics.score_fields import score_result
from nnunetv2_topo.metrics.surface_dice import surface_dice
from nnunetv2_topo.metrics.topo_score import tile_counts, tile_slices, topo_score_from_counts
from nnunetv2_topo.metrics.voi import voi, voi_score
from nnunetv2_topo.postprocessing.steps import PostprocessConfig, postprocess_volume

__all__ = ["TileKey", "postprocess_and_score", "postprocess_folder", "score_folder", "score_prediction", "tile_digest"]

TileKey = tuple[int, bytes]
"""``(tile index 0..7, digest of the prediction tile's packed bits)``: the cache key within one case."""


def tile_digest(tile: np.ndarray) -> bytes:
    """A 16-byte digest of a binary tile's shape and packed bits."""
    h = hashlib.blake2b(digest_size=16)
    h.update(np.asarray(tile.shape, np.int64).tobytes())
    h.update(np.packbits(np.ascontiguousarray(tile, dtype=bool)).tobytes())
    return h.digest()


def score_prediction(pred: np.ndarray, gt: np.ndarray, tile_cache: dict[TileKey, np.ndarray] | None = None) -> dict:
    """The leaderboard score of one volume, computed here (no worker processes); equals ``leaderboard_score``.

    ``tile_cache`` (one dict per case; its ground truth must never change): counts found in it are reused, counts
    computed are added to it. The result also holds ``tile_hits`` and ``tile_misses`` (engine or shortcut runs).
    """
    pred_fg, gt_fg = binarize_pair(pred, gt)
    counts = np.zeros((3, 3), np.int64)
    hits = misses = 0
    for index, sl in enumerate(tile_slices(pred_fg.shape)):
        p, g = pred_fg[sl], gt_fg[sl]
        if 0 in p.shape:
            continue
        key = (index, tile_digest(p)) if tile_cache is not None else None
        found = tile_cache.get(key) if tile_cache is not None and key is not None else None
        if found is None:
            found = np.asarray(tile_counts(np.ascontiguousarray(p), np.ascontiguousarray(g)), np.int64)
            misses += 1
            if tile_cache is not None and key is not None:
                tile_cache[key] = found
        else:
            hits += 1
        counts += found
    topo = topo_score_from_counts(counts)
    sd = surface_dice(pred_fg, gt_fg, SURFACE_TOLERANCE)
    split, merge = voi(pred_fg, gt_fg)
    voi_s = voi_score(split, merge)
    return {**score_result(topo, sd, split, merge, voi_s, counts), "tile_hits": hits, "tile_misses": misses}


def postprocess_and_score(
    volume: np.ndarray,
    gt: np.ndarray,
    config: PostprocessConfig = PostprocessConfig(),  # noqa: B008
    tile_cache: dict[TileKey, np.ndarray] | None = None,
) -> dict:
    """:func:`score_prediction` of ``postprocess_volume(volume, config)``."""
    return score_prediction(postprocess_volume(volume, config), gt, tile_cache)


def postprocess_folder(
    pred_dir: str | os.PathLike, out_dir: str | os.PathLike, config: PostprocessConfig, progress: bool = False
) -> list[Path]:
    """Post-process every volume of ``pred_dir`` into ``out_dir/<id>.tif`` (uint8 0/1); returns the written files."""
    from tqdm import tqdm

    from nnunetv2_topo.io import index_volumes, read_volume, write_tiff

    preds = index_volumes(pred_dir, "prediction")
    if not preds:
        raise FileNotFoundError(f"no predicted volumes (.tif, .tiff, .nii, .nii.gz) in {pred_dir}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for cid, pred in tqdm(preds.items(), desc="postprocess", unit="case", disable=not progress):
        path = out_dir / f"{cid}.tif"
        write_tiff(path, postprocess_volume(read_volume(pred), config))
        written.append(path)
    return written


def score_folder(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    config: PostprocessConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    num_processes: int = 1,
    progress: bool = False,
    only_predicted: bool = False,
) -> dict:
    """Score the predictions of ``pred_dir`` raw and, when ``config`` is given, post-processed into ``out_dir``.

    Returns ``{"raw": evaluate_folders(...)}`` plus ``"postprocessed"`` and ``"postprocess_config"`` with a
    ``config``. ``only_predicted``: ground truth without a prediction is skipped (nnU-Net's ``gt_segmentations``
    holds every training case).
    """
    from nnunetv2_topo.metrics import evaluate_folders

    if config is not None and out_dir is None:
        raise ValueError("score_folder needs out_dir for the post-processed predictions when config is given")
    summary = {"raw": evaluate_folders(pred_dir, gt_dir, num_processes, progress, only_predicted)}
    if config is not None:
        assert out_dir is not None  # checked above
        postprocess_folder(pred_dir, out_dir, config, progress)
        summary["postprocessed"] = evaluate_folders(out_dir, gt_dir, num_processes, progress, only_predicted)
        summary["postprocess_config"] = config.to_dict()
    return summary
