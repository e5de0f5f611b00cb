"""Step hygiene: one host-device read per training step, no host-to-device copy but the batch's (contiguous,
non-blocking) and no stream synchronisation, for every variant (EMA and target channels included), term values read
once per epoch, no CUDA cache emptying inside scoring rounds,
and the topology targets only on the full-resolution deep-supervision scale."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
import torch.utils._pytree as pytree
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.weak import WeakTensorKeyDictionary
from trainer_fixtures import make_trainer, synthetic_batch

from nnunetv2_topo.losses import TermValues, TopologyLoss
from nnunetv2_topo.trainers import (
    nnUNetTrainerTopoWarmup,
    nnUNetTrainerTopoWarmup_AdamW,
    nnUNetTrainerTopoWarmup_FiveTerm,
    nnUNetTrainerTopoWarmup_SkelRecall,
)
from nnunetv2_topo.trainers.loss_adapter import TopoLossCall
from nnunetv2_topo.trainers.score_predict import cuda_cache_kept
from nnunetv2_topo.transforms import TopoTargetsTransform

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")
"""Tensor methods that wait for the device when the tensor lives on a GPU."""


class _Reads:
    """Count the calls of :data:`READS` made from this package's code (file:line) while active."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sites: list[str] = []
        package = os.sep + "nnunetv2_topo" + os.sep
        for name in READS:
            original = getattr(torch.Tensor, name)

            def wrapper(tensor, *args, _original=original, _name=name, **kwargs):
                frame = sys._getframe(1)
                if package in frame.f_code.co_filename:
                    self.sites.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {_name}")
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, wrapper)


def test_train_step_reads_the_device_once(tmp_path, monkeypatch) -> None:
    """Loss, gradient norm and the skip verdict come back in one transfer; the term values stay on the device (on
    CUDA each read below would be a synchronisation; the CPU run counts the same call sites)."""
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup, {"ema_decay": 0.9})
    trainer.on_train_epoch_start()
    trainer.train_step(synthetic_batch(seed=0))  # warm-up: lazy initialisations
    reads = _Reads(monkeypatch)
    out = trainer.train_step(synthetic_batch(seed=1))
    assert len(reads.sites) == 1 and "guarded_step.py" in reads.sites[0] and "tolist" in reads.sites[0], reads.sites
    assert np.isfinite(out["loss"])
    assert isinstance(trainer._train_terms[-1], TermValues) and trainer._train_terms[-1]._floats is None
    monkeypatch.undo()
    trainer.on_train_epoch_end([out])
    logged = trainer.logger.get_value("train_loss_cldice", step=-1)
    assert logged == pytest.approx(np.mean([t["cldice"] for t in trainer._train_terms]))


SYNCS = (
    (torch.cuda, "synchronize"),
    (torch.cuda.Stream, "synchronize"),
    (torch.cuda.Event, "synchronize"),
    (torch.cuda.Stream, "query"),
    (torch.cuda.Event, "query"),
)
"""Calls that make the host wait for (or poll) a CUDA stream."""


def _names_device(args: tuple, kwargs: dict) -> bool:
    """Whether a ``Tensor.to`` call names a device (a transfer when the tensor lives elsewhere), not only a dtype."""
    if kwargs.get("device") is not None:
        return True
    return bool(args) and isinstance(args[0], (torch.device, str, int, torch.Tensor))


class _Residence(TorchDispatchMode):
    """Which tensors a CUDA run would hold in host memory, followed through every aten op on the CPU: the network's
    and optimizer's tensors are on the device, the batch and every other pre-existing tensor in host memory; an
    op's outputs are on the device when one of its inputs is (or a factory op was given a ``device``)."""

    def __init__(self, device_tensors: list[torch.Tensor]) -> None:
        super().__init__()
        self.on_device = WeakTensorKeyDictionary()
        for t in device_tensors:
            self.on_device[t] = True

    def resident(self, tensor: torch.Tensor) -> bool:
        return tensor in self.on_device

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if any(t in self.on_device for t in inputs) or (not inputs and kwargs.get("device") is not None):
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.on_device[t] = True
        return out


class _Transfers:
    """Record every host-to-device transfer (``Tensor.to(device)`` / ``Tensor.cuda()`` of a tensor a CUDA run holds
    in host memory, see :class:`_Residence`) made while active by any code, torch's own helpers included, and every
    stream synchronisation. A transfer overlaps with compute only when its source is the loader's batch itself
    (pinned by nnU-Net's loader; a view of it too), contiguous and ``non_blocking``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, batch: dict, residence: _Residence) -> None:
        self.batch = {t.untyped_storage().data_ptr() for t in [batch["data"], *batch["target"]]}
        self.transfers: list[tuple[str, bool, bool, bool]] = []
        """``(call site, source in the batch's memory, contiguous, non_blocking)``"""
        self.syncs: list[str] = []
        original_to, original_cuda = torch.Tensor.to, torch.Tensor.cuda

        def record(tensor: torch.Tensor, non_blocking: bool) -> None:
            if residence.resident(tensor):
                return  # already on the device: a no-op
            frame = sys._getframe(2)
            where = f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno}"
            from_batch = tensor.untyped_storage().data_ptr() in self.batch  # the loader's (pinned) memory
            self.transfers.append((where, from_batch, tensor.is_contiguous(), non_blocking))

        def to(tensor, *args, **kwargs):
            out = original_to(tensor, *args, **kwargs)
            if _names_device(args, kwargs):
                record(tensor, bool(kwargs.get("non_blocking", len(args) > 1 and args[1] is True)))
                residence.on_device[out] = True
            return out

        def cuda(tensor, *args, **kwargs):
            record(tensor, bool(kwargs.get("non_blocking", False)))
            return original_cuda(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(torch.Tensor, "cuda", cuda)
        for owner, name in SYNCS:
            monkeypatch.setattr(owner, name, lambda *a, _n=f"{owner.__name__}.{name}", **k: self.syncs.append(_n))

    def offending(self) -> list[tuple[str, bool, bool, bool]]:
        """Transfers that would block the host or copy something else than the batch, every step."""
        return [t for t in self.transfers if not (t[1] and t[2] and t[3])]


def _device_tensors(trainer) -> list[torch.Tensor]:
    """What a CUDA run holds on the device before a step: weights, gradients, optimizer state, the EMA's average,
    the AMP scale."""
    modules = [trainer.network, trainer.loss]
    ema = trainer.weight_ema
    if ema is not None:
        modules.append(getattr(ema, "module", None) or ema.averaged.module)  # main kept torch's AveragedModel
    out = [t for m in modules for t in (*m.parameters(), *m.buffers())]
    out += [p.grad for p in trainer.network.parameters() if p.grad is not None]
    # torch keeps an optimizer's scalar step counters in host memory (unless capturable or fused)
    out += [v for s in trainer.optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor) and v.ndim]
    scaler = trainer.grad_scaler  # GradScaler creates its scale and growth tracker on the loss's device
    out += [t for t in (getattr(scaler, "_scale", None), getattr(scaler, "_growth_tracker", None)) if t is not None]
    return out


class _ResidentReads:
    """Count the calls of :data:`READS` on tensors a CUDA run holds on the device, by any code (torch's included)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, residence: _Residence) -> None:
        self.sites: list[str] = []
        for name in READS:
            original = getattr(torch.Tensor, name)

            def wrapper(tensor, *args, _original=original, _name=name, **kwargs):
                if residence.resident(tensor):
                    frame = sys._getframe(1)
                    self.sites.append(f"{os.path.basename(frame.f_code.co_filename)}:{frame.f_lineno} {_name}")
                return _original(tensor, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, wrapper)


@pytest.mark.parametrize(
    ("trainer_cls", "config", "amp"),
    [
        (nnUNetTrainerTopoWarmup, {"ema_decay": 0.9}, False),  # torch's AveragedModel copied its counter every step
        (nnUNetTrainerTopoWarmup_SkelRecall, {}, False),  # target channels: non-contiguous pageable slices
        (nnUNetTrainerTopoWarmup_FiveTerm, {"ema_decay": 0.5}, False),
        (nnUNetTrainerTopoWarmup_AdamW, {}, False),
        (nnUNetTrainerTopoWarmup, {"ema_decay": 0.9}, True),  # GradScaler.step read its found-inf flags (.item())
    ],
)
def test_train_step_copies_only_the_batch_and_never_waits(tmp_path, monkeypatch, trainer_cls, config, amp) -> None:
    """Every variant: the only host-to-device copies of a step are the batch's own tensors, contiguous and
    non-blocking; no stream synchronisation; one device read by any code (the guarded step's)."""
    trainer = make_trainer(tmp_path, monkeypatch, trainer_cls, {**config, "seed": 0})
    if amp:  # the CUDA path (scale, unscale, clip, step, update) with torch's CPU GradScaler
        trainer.grad_scaler = torch.GradScaler("cpu", init_scale=2.0**14)
    trainer.on_train_epoch_start()
    trainer.train_step(_batch_for(trainer, 0))  # warm-up: lazy initialisations, the EMA's first copy
    batch = _batch_for(trainer, 1)
    residence = _Residence(_device_tensors(trainer))
    transfers = _Transfers(monkeypatch, batch, residence)
    reads = _ResidentReads(monkeypatch, residence)
    with residence:
        trainer.train_step(batch)
    monkeypatch.undo()
    assert transfers.offending() == [], transfers.transfers
    assert transfers.syncs == []
    assert len(reads.sites) == 1 and "guarded_step.py" in reads.sites[0], reads.sites
    if trainer.weight_ema is not None:
        assert trainer.weight_ema.num_updates == 2


def _batch_for(trainer, seed: int) -> dict:
    """:func:`synthetic_batch` through the trainer's target transform (the extra channels its loss needs)."""
    batch = synthetic_batch(seed)
    pipeline = trainer.loss.insert_targets_transform(ComposeTransforms([]))
    if not pipeline.transforms:
        return batch
    full = torch.stack([pipeline(image=None, segmentation=s)["segmentation"] for s in batch["target"][0]])
    return {**batch, "target": [full.contiguous(), batch["target"][1]]}


def test_term_values_are_read_lazily_and_together() -> None:
    loss = TopologyLoss({"ce": 1.0, "dice": 1.0})
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 1, 6, 6, 6), generator=g)
    records = []
    for _ in range(3):
        loss(torch.randn(2, 2, 6, 6, 6, generator=g), labels)
        records.append(loss.last_term_values)
        assert records[-1]._floats is None
        assert dict(records[-1]) == loss.last_terms  # reading one record reads it alone
    fresh = [records[0], TermValues(("ce",), torch.tensor([0.25])), {"ce": 1.0}]
    out = TermValues.read_all(fresh)
    assert out[1]["ce"] == 0.25 and out[2] == {"ce": 1.0} and all(r._floats is not None for r in out[:2])
    assert dict(TermValues((), None)) == {}


def test_targets_ride_on_the_full_resolution_scale_only() -> None:
    adapter = TopoLossCall(TopologyLoss({"ce": 1.0, "skeleton_recall": 1.0, "boundary": 1.0}), ignore_label=2)
    ds = DownsampleSegForDSTransform(ds_scales=[[1, 1, 1], [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])
    pipeline = adapter.insert_targets_transform(ComposeTransforms([ds]))
    assert pipeline.transforms[0] is ds and isinstance(pipeline.transforms[1], TopoTargetsTransform)
    labels = torch.zeros((1, 8, 8, 8), dtype=torch.int16)
    labels[:, 3:5] = 1
    labels[:, :, :, -2:] = 2
    scales = pipeline(image=None, segmentation=labels)["segmentation"]
    assert [s.shape[0] for s in scales] == [3, 1, 1]  # labels + skeleton + band at full resolution only
    batch = {"data": torch.zeros(1, 1, 8, 8, 8), "target": [s[None] for s in scales]}
    taken = adapter.take_targets(batch, torch.device("cpu"))
    assert [t.shape[1] for t in taken["target"]] == [1, 1, 1] and set(adapter.extras) == {"skeleton", "band"}
    # no downsampling step: the transform goes last
    alone = adapter.insert_targets_transform(ComposeTransforms([]))
    assert [type(t) for t in alone.transforms] == [TopoTargetsTransform]


def _tiny_predictor():
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from nnunetv2_topo.reduced_plans import standalone_plans, vesuvius_dataset_json

    pm = PlansManager(standalone_plans((16, 16, 16), features=(2, 4)))
    cm = pm.get_configuration("3d_fullres")
    net = get_network_from_plans(
        cm.network_arch_class_name, cm.network_arch_init_kwargs, cm.network_arch_init_kwargs_req_import, 1, 2,
        deep_supervision=False,
    )  # fmt: skip
    predictor = nnUNetPredictor(perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.manual_initialization(net, pm, cm, None, vesuvius_dataset_json(1), "x", (0, 1, 2))
    return predictor


def test_scoring_rounds_do_not_empty_the_cuda_cache(monkeypatch) -> None:
    """nnU-Net's sliding window empties the cache 3 times per case; inside cuda_cache_kept not once, and the
    original function is back afterwards, also after an error."""
    from nnunetv2.inference import predict_from_raw_data

    calls: list[torch.device] = []
    monkeypatch.setattr(predict_from_raw_data, "empty_cache", calls.append)
    predictor = _tiny_predictor()
    image = torch.zeros(1, 20, 20, 20)
    predictor.predict_sliding_window_return_logits(image)
    assert len(calls) == 3
    with cuda_cache_kept():
        predictor.predict_sliding_window_return_logits(image)
        predictor.predict_sliding_window_return_logits(image)
    assert len(calls) == 3
    with pytest.raises(RuntimeError, match="boom"), cuda_cache_kept():
        raise RuntimeError("boom")
    predict_from_raw_data.empty_cache(torch.device("cpu"))
    assert len(calls) == 4


def test_term_values_is_a_full_mapping() -> None:
    """``TermValues`` is a ``Mapping``: ``values()``/``items()`` work like a dict's (its device tensor once sat in an
    attribute named ``values`` that hid ``Mapping.values``, so ``.values()`` raised TypeError)."""
    terms = TermValues(("ce", "total"), torch.tensor([0.25, 0.5]))
    assert list(terms.values()) == [0.25, 0.5]
    assert dict(terms.items()) == {"ce": 0.25, "total": 0.5}
    assert list(TermValues((), None).values()) == []
