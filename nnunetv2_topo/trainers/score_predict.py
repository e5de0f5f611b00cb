"""Prediction of a scoring round's cases in the training process: nnU-Net's sliding-window predictor on the
trainer's own network (built once, as nnU-Net's final validation builds it), with the weights validation uses (the
EMA when on), deep supervision off; the network is back in training mode afterwards. The network runs eagerly (never
a second ``torch.compile`` of it) and the logits -> segmentation conversion uses this rank's share of the cores.

nnU-Net's sliding window empties the CUDA cache three times per case (``predict_sliding_window_return_logits``
at its start and end, ``_internal_predict_sliding_window_return_logits`` at its start). Inside a training run
that hands the training step's cached blocks back to the driver, so the next steps allocate them again; during a
round those calls are no-ops (:func:`cuda_cache_kept`), and the cache stays as the training left it."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnunetv2_topo.trainers.weight_ema import unwrap_network

__all__ = ["PredictionSetup", "ScoreCasePredictor", "cuda_cache_kept"]


def _keep_cache(device: torch.device) -> None:
    del device  # nnU-Net's empty_cache(device), left out during a scoring round


@contextlib.contextmanager
def cuda_cache_kept() -> Iterator[None]:
    """nnU-Net's sliding-window predictor does not empty the CUDA cache inside this block (its module's
    ``empty_cache`` is replaced for the duration and restored afterwards, also on errors)."""
    from nnunetv2.inference import predict_from_raw_data

    original = predict_from_raw_data.empty_cache
    predict_from_raw_data.empty_cache = _keep_cache
    try:
        yield
    finally:
        predict_from_raw_data.empty_cache = original


@dataclass(frozen=True)
class PredictionSetup:
    """What a round's sliding-window prediction needs, given explicitly (:meth:`from_trainer` reads it from the
    trainer once, after nnU-Net's ``initialize``)."""

    module: torch.nn.Module
    """The plain network (no DDP, no ``torch.compile`` wrapper: the scoring rounds run it eagerly)."""
    device: torch.device
    plans_manager: Any
    configuration_manager: Any
    dataset_json: dict
    trainer_name: str
    mirror_axes: tuple[int, ...] | None
    open_dataset: Callable[[list[str]], Any]
    """``open_dataset(cases)``: nnU-Net's dataset of the preprocessed cases (``load_case``)."""
    scoring_mode: Callable[[], contextlib.AbstractContextManager]
    """The weights validation uses (the EMA when on), deep supervision off, ``eval()``; restored on exit."""

    @classmethod
    def from_trainer(cls, trainer: Any) -> PredictionSetup:
        t = trainer
        module = unwrap_network(t.network)

        def open_dataset(cases: list[str]) -> Any:
            previous = t.folder_with_segs_from_previous_stage
            return t.dataset_class(t.preprocessed_dataset_folder, cases, folder_with_segs_from_previous_stage=previous)

        @contextlib.contextmanager
        def scoring_mode() -> Iterator[None]:
            averaged = t.weight_ema.applied_to(module) if t.weight_ema is not None else contextlib.nullcontext()
            t.set_deep_supervision_enabled(False)
            module.eval()
            try:
                with averaged:
                    yield
            finally:
                t.set_deep_supervision_enabled(t.enable_deep_supervision)
                module.train()

        return cls(
            module, t.device, t.plans_manager, t.configuration_manager, t.dataset_json, type(t).__name__,
            t.inference_allowed_mirroring_axes, open_dataset, scoring_mode,
        )  # fmt: skip


class ScoreCasePredictor:
    """``predictor(cases)`` yields ``(segmentation, gt_file)`` for each case.

    Args:
        setup: :class:`PredictionSetup`, or a function returning it (called at the first round).
        gt_dir: the folder of the ground-truth segmentations.
        mirroring: ``score_mirroring``.
        threads: torch threads of the logits -> segmentation conversion (this rank's share of the cores).
    """

    def __init__(
        self, setup: PredictionSetup | Callable[[], PredictionSetup], gt_dir: Path, mirroring: bool, threads: int
    ) -> None:
        self._setup = setup
        self.gt_dir = gt_dir
        self.mirroring = mirroring
        self.threads = max(1, int(threads))
        self._predictor: Any = None

    @property
    def setup(self) -> PredictionSetup:
        if not isinstance(self._setup, PredictionSetup):
            self._setup = self._setup()
        return self._setup

    def sliding_window(self) -> Any:
        """nnU-Net's predictor on the setup's module, built once. With ``nnUNet_compile`` nnU-Net's
        ``manual_initialization`` wraps the module in ``torch.compile``; the wrapper is dropped before it ever
        compiles, so the rounds never compile a second copy of the network (the training's compiled module runs
        in training mode only)."""
        if self._predictor is None:
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            s = self.setup
            predictor = nnUNetPredictor(
                tile_step_size=0.5, use_gaussian=True, use_mirroring=self.mirroring,
                perform_everything_on_device=s.device.type == "cuda", device=s.device, verbose=False,
                verbose_preprocessing=False, allow_tqdm=False,
            )  # fmt: skip
            with contextlib.redirect_stdout(io.StringIO()):  # its "Using torch.compile" would not be true
                predictor.manual_initialization(
                    s.module, s.plans_manager, s.configuration_manager, None, s.dataset_json, s.trainer_name,
                    s.mirror_axes,
                )  # fmt: skip
            predictor.network = s.module
            self._predictor = predictor
        return self._predictor

    def __call__(self, cases: list[str]) -> Iterator[tuple[np.ndarray, str]]:
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        if not cases:
            return
        s = self.setup
        predictor = self.sliding_window()
        dataset = s.open_dataset(cases)
        with s.scoring_mode(), torch.no_grad(), cuda_cache_kept():
            for key in cases:
                data, _, _, properties = dataset.load_case(key)
                logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.array(data[:])))
                segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                    logits.cpu(), s.plans_manager, s.configuration_manager, predictor.label_manager, properties,
                    num_threads_torch=self.threads,
                )  # fmt: skip
                del logits
                yield segmentation, str(self.gt_dir / f"{key}{s.dataset_json['file_ending']}")
