"""``optimizer: muon``: torch's Muon on 2-D views of the hidden conv weights, AdamW/SGD for the rest; the update
equals torch.optim.Muon's, the parameter split, the schedule's LR in both groups, an exact resume with weight EMA and
clipping, the configuration keys, and DDP on two CPU processes."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch
from torch import nn
from trainer_fixtures import make_trainer, parameters_snapshot, synthetic_batch

from nnunetv2_topo.trainers import config as C
from nnunetv2_topo.trainers.muon import MuonHybrid, split_muon_parameters
from nnunetv2_topo.trainers.variants import nnUNetTrainerTopoWarmup_Muon
from nnunetv2_topo.trainers.weight_ema import unwrap_network

MUON = {"loss_weights": {"ce": 1.0, "dice": 1.0}, "warmup_epochs": 0, "seed": 0, "ema_decay": 0.9,
        "grad_clip_norm": 0.01}  # fmt: skip


def _grads(seed: int, *shapes: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) for s in shapes]


def test_update_of_a_2d_parameter_and_a_conv_weight_equals_torch_muon() -> None:
    torch.manual_seed(0)
    w2 = torch.randn(6, 10)
    conv = torch.randn(4, 3, 3, 3, 3)
    mine = [nn.Parameter(w2.clone()), nn.Parameter(conv.clone())]
    ref = [nn.Parameter(w2.clone()), nn.Parameter(conv.clone().view(4, -1))]
    opt = MuonHybrid(mine, [], lr=0.02, muon_weight_decay=0.1)
    opt_ref = torch.optim.Muon(ref, lr=0.02, weight_decay=0.1)
    for seed in range(3):
        g2, gc = _grads(seed, (6, 10), (4, 3, 3, 3, 3))
        mine[0].grad, mine[1].grad = g2.clone(), gc.clone()
        ref[0].grad, ref[1].grad = g2.clone(), gc.clone().view(4, -1)
        opt.step()
        opt_ref.step()
    assert torch.equal(mine[0].detach(), ref[0].detach())
    assert torch.equal(mine[1].detach().view(4, -1), ref[1].detach())
    assert not torch.equal(mine[1].detach(), conv)


def test_split_sends_first_conv_norms_biases_and_heads_to_the_other_optimizer(tmp_path, monkeypatch) -> None:
    trainer = make_trainer(tmp_path, monkeypatch, nnUNetTrainerTopoWarmup_Muon, MUON)
    net = unwrap_network(trainer.network)
    muon, other = split_muon_parameters(net)
    names = {id(p): n for n, p in net.named_parameters()}
    assert muon and all(p.ndim == 5 for p in muon)
    other_names = [names[id(p)] for p in other]
    first_conv = next(n for n, p in net.named_parameters() if p.ndim == 5)
    assert first_conv in other_names
    assert any("seg_layers" in n for n in other_names) and not any("seg_layers" in names[id(p)] for p in muon)
    assert all(p.ndim < 5 for n, p in net.named_parameters() if n in other_names and n != first_conv
               and "seg_layers" not in n)  # fmt: skip
    opt = trainer.optimizer
    assert isinstance(opt, MuonHybrid)
    assert [g["name"] for g in opt.param_groups] == ["muon", "adamw"]
    # the schedule sets one LR; the AdamW group follows at muon_other_lr / initial_lr of it
    for g in opt.param_groups:
        g["lr"] = 0.01
    opt._sync_lrs()
    assert opt.muon.param_groups[0]["lr"] == pytest.approx(0.01)
    assert opt.other.param_groups[0]["lr"] == pytest.approx(0.01 * 3e-4 / 0.02)


def _start(trainer, epoch: int = 0) -> None:
    trainer.current_epoch = epoch
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()


def test_resume_is_exact_with_ema_and_clipping(tmp_path, monkeypatch) -> None:
    a = make_trainer(tmp_path / "a", monkeypatch, nnUNetTrainerTopoWarmup_Muon, MUON)
    _start(a)
    before = parameters_snapshot(a)
    for seed in range(2):
        a.train_step(synthetic_batch(seed))
    assert a.guarded_step.epoch_grad_norms and max(a.guarded_step.epoch_grad_norms) > MUON["grad_clip_norm"]
    assert any(not torch.equal(x, y) for x, y in zip(before, parameters_snapshot(a)))
    assert a.weight_ema.num_updates == 2
    path = tmp_path / "ckpt.pth"
    a.save_checkpoint(str(path))
    b = make_trainer(tmp_path / "b", monkeypatch, nnUNetTrainerTopoWarmup_Muon, MUON, resume=True)
    b.load_checkpoint(str(path))
    for t in (a, b):
        _start(t, 1)
        t.train_step(synthetic_batch(7))
    assert all(torch.equal(x, y) for x, y in zip(parameters_snapshot(a), parameters_snapshot(b)))
    ema = [[p.detach().clone() for p in t.weight_ema.module.parameters()] for t in (a, b)]
    assert all(torch.equal(x, y) for x, y in zip(*ema))


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [({"optimizer": "lion"}, "'optimizer'"), ({"optimizer": "muon", "muon_other": "rmsprop"}, "'muon_other'"),
     ({"optimizer": "muon", "muon_other_lr": -1}, "'muon_other_lr'"),
     ({"optimizer": "muon", "muon_weight_decay": -0.1}, "'muon_weight_decay'")],
)  # fmt: skip
def test_bad_keys_name_the_key(overrides, fragment) -> None:
    with pytest.raises(C.TopoConfigError, match=fragment):
        C.resolve_config(overrides, source="cfg.yaml")


def test_muon_keys_without_muon_warn() -> None:
    cfg = C.resolve_config({"optimizer": "sgd", "muon_other": "sgd"})
    assert any("muon_other = sgd has no effect" in w for w in C.check_consistency(cfg, "cfg"))
    cfg = C.resolve_config({"optimizer": "muon", "muon_other": "sgd", "muon_other_lr": None})
    assert cfg["muon_other_lr"] is None and C.check_consistency(cfg, "cfg") == []


# ------------------------------------------------------------------------------------ DDP (two gloo processes)
def _ddp_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from nnunetv2_topo.trainers.guarded_step import GuardedStep
    from nnunetv2_topo.trainers.optimizers import build_optimizer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)  # the same initial weights; DDP broadcasts rank 0's anyway
        net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4, affine=True),
                            nn.Conv3d(4, 4, 3, padding=1), nn.Conv3d(4, 2, 1))  # fmt: skip
        ddp = DDP(net)
        opt = build_optimizer("muon", ddp, 0.02, 3e-5, {"muon_other": "sgd", "muon_other_lr": None})
        step = GuardedStep(1.0, 5, 1)
        for i in range(3):
            x = torch.randn(2, 1, 6, 6, 6, generator=torch.Generator().manual_seed(10 * rank + i))  # different data
            opt.zero_grad(set_to_none=True)
            step.step(ddp(x).square().mean(), ddp, opt)
        flat = torch.cat([p.detach().reshape(-1) for p in net.parameters()])
        Path(out_dir, f"muon{rank}.json").write_text(json.dumps({"params": flat.tolist()}))
    finally:
        dist.destroy_process_group()


@pytest.mark.e2e
def test_runs_under_ddp_and_ranks_stay_identical(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(port, str(tmp_path)), nprocs=2, join=True)
    params = [json.loads((tmp_path / f"muon{r}.json").read_text())["params"] for r in (0, 1)]
    assert params[0] == params[1]
