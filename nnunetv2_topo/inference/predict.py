"""Several trained nnU-Net models -> fused, post-processed volumes, one case at a time, nothing but the results on disk.

Per case and model: nnU-Net's own preprocessing (``preprocessor.run_case_npy``) and sliding-window prediction
(``nnUNetPredictor.predict_logits_from_preprocessed_data``: Gaussian weighting, the folds' logits averaged, nnU-Net's
mirroring when TTA is on), then the logits are taken back to the image's geometry as ``nnUNetv2_predict`` does
(resampling, un-cropping, un-transposing) and reduced to the binary logit ``l1 - l0``. The models' binary logits are
fused with :class:`~nnunetv2_topo.postprocessing.fusion.Fusion`; the result is thresholded at 0.5 or post-processed.

TTA ``mirror+rot90`` adds one view: the preprocessed volume rotated by 90 degrees about the image's z axis (the
scroll axis); its logits are rotated back before averaging. With nnU-Net's 8 mirrorings inside each view this gives
the 16 distinct views of the square's symmetry group times the z flip (rot180 and rot270 equal rot0 and rot90
followed by flips of both in-plane axes, so they would only repeat views). The sliding window runs on the rotated
volume, so neither the in-plane shape nor the patch need to be square.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from nnunetv2_topo.inference.cases import InputCase
from nnunetv2_topo.inference.models import ModelFolder, load_predictor
from nnunetv2_topo.postprocessing.fusion import LOGIT_CLAMP, Fusion
from nnunetv2_topo.postprocessing.steps import PostprocessConfig, binarize, postprocess_volume

if TYPE_CHECKING:
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

TTA_MODES = ("none", "mirror", "mirror+rot90")
THRESHOLD = 0.5  # without a post-processing config: foreground where the fused probability > 0.5 (logit > 0)


def _rotation_dims(transpose_forward: Sequence[int]) -> tuple[int, int]:
    """The dims of a preprocessed (C, ...) tensor that span the image's (Y, X) plane (rotation about image z)."""
    z = list(transpose_forward).index(0)
    a, b = (i for i in range(3) if i != z)
    return a + 1, b + 1


@dataclass
class LoadedModel:
    folder: ModelFolder
    predictor: nnUNetPredictor
    weight: float

    def preprocess(self, image: np.ndarray, spacing: Sequence[float]):
        """nnU-Net's preprocessing of one (Z, Y, X) image: (data tensor (C, ...), properties)."""
        import torch

        p = self.predictor
        preprocessor = p.configuration_manager.preprocessor_class(verbose=False)
        data, _, properties = preprocessor.run_case_npy(
            image[None], None, {"spacing": list(spacing)}, p.plans_manager, p.configuration_manager, p.dataset_json
        )
        return torch.from_numpy(data).to(dtype=torch.float32, memory_format=torch.contiguous_format), properties

    def logits(self, data, tta: str):
        """Logits (2, ...) of the preprocessed ``data``: the folds' mean, over the views of ``tta``."""
        import torch

        p = self.predictor
        p.use_mirroring = tta != "none"
        logits = p.predict_logits_from_preprocessed_data(data)
        if tta != "mirror+rot90":
            return logits  # nnU-Net's own tensor: identical to nnUNetv2_predict's
        dims = _rotation_dims(p.plans_manager.transpose_forward)
        rotated = p.predict_logits_from_preprocessed_data(torch.rot90(data, 1, dims).contiguous())
        return (logits.float() + torch.rot90(rotated, -1, dims).float()) / 2

    def binary_logit(self, logits, properties: dict) -> np.ndarray:
        """``l1 - l0`` (float32) in the image's geometry: nnU-Net's export steps (resample, un-crop with
        background, un-transpose) applied to the logits instead of the segmentation."""
        p = self.predictor
        pm, cm = p.plans_manager, p.configuration_manager
        cropped_shape = properties["shape_after_cropping_and_before_resampling"]
        spacing_t = [properties["spacing"][i] for i in pm.transpose_forward]
        current = cm.spacing if len(cm.spacing) == len(cropped_shape) else [spacing_t[0], *cm.spacing]
        resampled = cm.resampling_fn_probabilities(logits, cropped_shape, current, spacing_t)
        resampled = resampled.numpy() if hasattr(resampled, "numpy") else np.asarray(resampled)
        binary = np.subtract(resampled[1], resampled[0], dtype=np.float32)
        out = np.full(properties["shape_before_cropping"], -LOGIT_CLAMP, np.float32)
        out[tuple(slice(lo, hi) for lo, hi in properties["bbox_used_for_cropping"])] = binary
        return out.transpose(pm.transpose_backward)


def load_models(
    folders: Sequence[ModelFolder], weights: Sequence[float], device, progress: bool = True
) -> list[LoadedModel]:
    out = []
    for folder, weight in zip(folders, weights, strict=True):
        if progress:
            print(f"loading {folder.path} (folds {', '.join(folder.folds)}, weight {weight:g})", file=sys.stderr)
        out.append(LoadedModel(folder, load_predictor(folder, device, use_mirroring=True), float(weight)))
    return out


def fused_probability(models: Sequence[LoadedModel], image: np.ndarray, spacing, tta: str, mode: str) -> np.ndarray:
    """The fused foreground probability (float32, the image's shape) of one case."""
    fusion = Fusion(mode)
    for m in models:
        data, properties = m.preprocess(image, spacing)
        logits = m.logits(data, tta)
        del data
        fusion.add_logit(m.binary_logit(logits, properties), m.weight)
        del logits
    return fusion.probability()


def to_mask(probability: np.ndarray, steps: PostprocessConfig | None) -> np.ndarray:
    """uint8 0/1: ``probability > 0.5`` without a post-processing config, else the configured steps."""
    if steps is None:
        return binarize(probability, THRESHOLD).astype(np.uint8)
    return postprocess_volume(probability, steps)


@dataclass
class RunReport:
    """What a run did, for the closing summary line."""

    cases: int = 0
    seconds: float = 0.0
    without_tta: list[str] = field(default_factory=list)
    budget_warned: bool = False

    def summary(self, tta: str, budget_hours: float | None) -> str:
        line = f"predicted {self.cases} case(s) in {self.seconds:.1f} s"
        if self.cases:
            line += f" ({self.seconds / self.cases:.1f} s per case, TTA {tta})"
        if self.without_tta:
            line += (
                f"; time budget of {budget_hours:g} h passed: the last {len(self.without_tta)} case(s) were "
                f"predicted without TTA ({', '.join(self.without_tta[:5])}{' …' if len(self.without_tta) > 5 else ''})"
            )
        return line


def predict_cases(
    models: Sequence[LoadedModel],
    cases: Sequence[InputCase],
    tta: str,
    fusion_mode: str,
    steps: PostprocessConfig | None,
    report: RunReport,
    budget_hours: float | None = None,
    progress: bool = True,
    clock: Callable[[], float] = time.monotonic,
    log_case: Callable[[str], None] | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(case id, uint8 mask)`` per case, with a progress bar (per-case time, ETA). With ``budget_hours``:
    a warning when the ETA passes the budget, and once the elapsed time passes it, the remaining cases are
    predicted without TTA (recorded in ``report``). ``log_case`` receives one line per finished case (id, seconds,
    TTA used, and whether TTA was dropped to fit the budget), for logs where a progress bar is unreadable."""
    if tta not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {tta!r}")
    budget_s = None if budget_hours is None else budget_hours * 3600.0
    start = clock()
    bar = tqdm(total=len(cases), desc="predict", unit="case", disable=not progress, file=sys.stderr)
    try:
        for i, case in enumerate(cases):
            t0 = clock()
            elapsed = t0 - start
            case_tta = tta
            if budget_s is not None and elapsed >= budget_s and tta != "none":
                case_tta = "none"
                report.without_tta.append(case.id)
            image, spacing = case.read()
            mask = to_mask(fused_probability(models, image, spacing, case_tta, fusion_mode), steps)
            del image
            yield case.id, mask
            now = clock()
            report.cases += 1
            report.seconds = now - start
            eta = (now - start) / (i + 1) * (len(cases) - i - 1)
            bar.set_postfix_str(f"{case.id} {now - t0:.1f} s/case, ETA {eta / 60:.1f} min", refresh=False)
            bar.update()
            if log_case is not None:
                dropped = " (dropped from " + tta + " to fit the time budget)" if case_tta != tta else ""
                log_case(f"case {i + 1}/{len(cases)} {case.id}: {now - t0:.1f} s, TTA {case_tta}{dropped}")
            if budget_s is not None and not report.budget_warned and now - start + eta > budget_s:
                report.budget_warned = True
                tqdm.write(
                    f"warning: the ETA ({(now - start + eta) / 3600:.2f} h in all) exceeds the time budget of "
                    f"{budget_hours:g} h; once the budget is spent the remaining cases are predicted without TTA",
                    file=sys.stderr,
                )
    finally:
        bar.close()
