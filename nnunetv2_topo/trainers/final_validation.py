"""Final validation extras: the competition metric on nnU-Net's ``validation/`` folder (``summary_topo.json``),
bounded by cores, free memory and ``final_score_workers``; a failure says why and how to score the folder afterwards.
Also the Tiff3DIO spacing sidecars nnU-Net's ``gt_segmentations`` copy lacks.

:class:`FinalValidation` needs the fold's folders, not a trainer.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from nnunetv2_topo.evaluation.folder_scoring import score_folder
from nnunetv2_topo.io import atomic_path, atomic_write_text, index_volumes, volume_shape
from nnunetv2_topo.metrics.engine import auto_workers
from nnunetv2_topo.postprocessing import PostprocessConfig
from nnunetv2_topo.trainers.diagnostics import console_log

__all__ = ["FinalValidation", "gt_segmentations_dir"]


def gt_segmentations_dir(preprocessed_dataset_folder_base: str | Path) -> Path:
    """nnU-Net's copy of the training labels (``<preprocessed>/<dataset>/gt_segmentations``)."""
    return Path(preprocessed_dataset_folder_base) / "gt_segmentations"


class FinalValidation:
    """The competition scoring of a fold's ``validation/`` folder.

    Args:
        output_folder: the fold folder (``validation/`` lies in it).
        gt_dir: :func:`gt_segmentations_dir` of the dataset.
        file_ending: the dataset's ``file_ending``.
        workers_cap: ``final_score_workers`` (None: cores and memory alone).
        log: the trainer's log (``message, also_print_to_console=...``).
    """

    def __init__(
        self,
        output_folder: str | Path,
        gt_dir: Path,
        file_ending: str,
        workers_cap: int | None,
        log: Callable[..., None] = console_log,
    ) -> None:
        self.val_dir = Path(output_folder) / "validation"
        self.gt_dir = Path(gt_dir)
        self.file_ending = file_ending
        self.workers_cap = workers_cap
        self.log = log

    def copy_gt_spacing_sidecars(self, raw_labels: Path | None) -> int:
        """Give ``gt_segmentations/`` the Tiff3DIO spacing sidecars of the raw labels.

        nnU-Net copies only the label TIFFs there, so its validation reads them with a "no spacing file found"
        warning per case. Copies ``<raw_labels>/<case>.json`` beside each TIFF lacking one; returns how many were
        copied (0 for other file types or when the raw labels are not reachable)."""
        if self.file_ending not in (".tif", ".tiff") or raw_labels is None:
            return 0
        if not raw_labels.is_dir() or not self.gt_dir.is_dir():
            return 0
        copied = 0
        for seg in self.gt_dir.glob(f"*{self.file_ending}"):
            sidecar = seg.with_name(seg.name[: -len(self.file_ending)] + ".json")
            source = raw_labels / sidecar.name
            if not sidecar.exists() and source.is_file():
                with atomic_path(sidecar) as tmp:
                    shutil.copyfile(source, tmp)
                copied += 1
        return copied

    def workers(self, num_cases: int, largest_voxels: int) -> int:
        """Betti-matching workers: the CLI's rule (cores, and free memory for one tile of the largest volume each:
        ``metrics.engine.auto_workers``), at most ``workers_cap``; 0 (serial, in this process) for one case."""
        if num_cases <= 1:
            return 0
        tile_voxels = math.ceil(largest_voxels / 8)  # the metric cuts every axis in two
        workers = auto_workers(8 * num_cases, tile_voxels)
        if self.workers_cap is not None:
            workers = min(workers, int(self.workers_cap))
        self.log(
            f"Competition scoring of {num_cases} cases with {workers} Betti-matching workers (cores, free memory "
            f"for tiles of {tile_voxels} voxels, final_score_workers={self.workers_cap})"
        )
        return workers

    def score(self, log_summary: Callable[[str, Any], None] | None = None) -> dict[str, Any]:
        """Score ``validation/`` with the leaderboard metric, raw and post-processed; write summary_topo.json."""
        preds = index_volumes(self.val_dir, "validation")
        if not preds:
            raise FileNotFoundError(f"no predicted volumes in {self.val_dir}")
        largest = max(math.prod(volume_shape(path)) for path in preds.values())
        num_processes = self.workers(len(preds), largest)
        # gt_segmentations holds every training case: score only this fold's predictions
        summary = score_folder(
            self.val_dir, self.gt_dir, PostprocessConfig(), self.val_dir / "postprocessed", num_processes,
            only_predicted=True,
        )  # fmt: skip
        raw, post = summary["raw"], summary["postprocessed"]
        out = self.val_dir / "summary_topo.json"
        atomic_write_text(out, json.dumps(summary, indent=2, default=float))
        if log_summary is not None:
            for kind, result in (("raw", raw), ("postprocessed", post)):
                for key, value in result["mean"].items():
                    log_summary(f"final_val/topo_{kind}_{key}", value)
        self.log(
            f"Validation competition score (mean over {len(preds)} cases): raw {raw['mean']['score']:.4f}, "
            f"post-processed {post['mean']['score']:.4f} (details: {out})",
            also_print_to_console=True,
        )
        return summary

    def report_failure(self, exc: BaseException) -> str:
        """Log why ``summary_topo.json`` is missing and the command that scores the folder afterwards."""
        cause = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, (BrokenProcessPool, MemoryError)) or "worker died" in str(exc):
            cause += " (most likely out of memory: lower final_score_workers in nnUNet_topo_config)"
        message = (
            f"WARNING: competition-metric scoring of the validation failed, so {self.val_dir / 'summary_topo.json'} "
            f"is missing: {cause}. The predictions are kept; score them afterwards with:\n  nnunetv2_topo evaluate "
            f"--input {self.val_dir} --gt {self.gt_dir} --only-predicted --json "
            f"{self.val_dir / 'summary_topo_raw.json'}"
        )
        self.log(message, also_print_to_console=True)
        return message

    def score_or_report(self, log_summary: Callable[[str, Any], None] | None = None) -> dict[str, Any] | None:
        """:meth:`score`; a failure is reported (the Dice validation stands) and gives None."""
        try:
            return self.score(log_summary)
        except Exception as exc:  # noqa: BLE001 (say clearly why the extra score is missing)
            self.report_failure(exc)
            return None
