"""Prediction of a scoring round's cases in the training process: nnU-Net's sliding-window predictor on the
trainer's own network (built once, as nnU-Net's final validation builds it), with the weights validation uses (the
EMA when on), deep supervision off; the network is back in training mode afterwards."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nnunetv2_topo.trainers.weight_ema import unwrap_network

__all__ = ["ScoreCasePredictor"]


class ScoreCasePredictor:
    """``predictor(cases)`` yields ``(segmentation, gt_file)`` for each case of ``trainer``'s fold."""

    def __init__(self, trainer: Any, gt_dir: Path, mirroring: bool) -> None:
        self.trainer = trainer
        self.gt_dir = gt_dir
        self.mirroring = mirroring
        self._predictor: Any = None

    def _sliding_window(self, module: torch.nn.Module) -> Any:
        if self._predictor is None:
            from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

            t = self.trainer
            predictor = nnUNetPredictor(
                tile_step_size=0.5, use_gaussian=True, use_mirroring=self.mirroring,
                perform_everything_on_device=t.device.type == "cuda", device=t.device, verbose=False,
                verbose_preprocessing=False, allow_tqdm=False,
            )  # fmt: skip
            predictor.manual_initialization(
                module, t.plans_manager, t.configuration_manager, None, t.dataset_json, type(t).__name__,
                t.inference_allowed_mirroring_axes,
            )  # fmt: skip
            self._predictor = predictor
        return self._predictor

    def __call__(self, cases: list[str]) -> Iterator[tuple[np.ndarray, str]]:
        from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape

        t = self.trainer
        if not cases:
            return
        module = unwrap_network(t.network)
        predictor = self._sliding_window(module)
        dataset = t.dataset_class(
            t.preprocessed_dataset_folder,
            cases,
            folder_with_segs_from_previous_stage=t.folder_with_segs_from_previous_stage,
        )
        averaged = t.weight_ema.applied_to(module) if t.weight_ema is not None else contextlib.nullcontext()
        t.set_deep_supervision_enabled(False)
        module.eval()
        try:
            with averaged, torch.no_grad():
                for key in cases:
                    data, _, _, properties = dataset.load_case(key)
                    logits = predictor.predict_sliding_window_return_logits(torch.from_numpy(np.array(data[:])))
                    segmentation = convert_predicted_logits_to_segmentation_with_correct_shape(
                        logits.cpu(), t.plans_manager, t.configuration_manager, t.label_manager, properties,
                        num_threads_torch=torch.get_num_threads(),
                    )  # fmt: skip
                    del logits
                    yield segmentation, str(self.gt_dir / f"{key}{t.dataset_json['file_ending']}")
        finally:
            t.set_deep_supervision_enabled(t.enable_deep_supervision)
            module.train()
