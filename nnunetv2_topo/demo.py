"""The end-to-end demo: synthetic Kaggle data → nnU-Net raw → plan/preprocess → train → predict → post-process →
evaluate → submission.zip, for ``nnUNetTrainerTopoWarmup`` and, on the same budget, nnU-Net's own trainer.

Every nnU-Net step runs the real ``nnUNetv2_*`` console scripts in a subprocess, exactly as a user would type them;
their output streams to the terminal and to ``<work>/logs/<stage>.log``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.evaluation.score_table import format_table
from nnunetv2_topo.nnunet_env import FINAL_CHECKPOINT, nnunet_env
from nnunetv2_topo.postprocessing import PostprocessConfig
from nnunetv2_topo.postprocessing.config_file import load_postprocess_file
from nnunetv2_topo.reduced_plans import make_reduced_plans

T = TypeVar("T")

MARKER = ".nnunetv2_topo_demo"
TOPO_TRAINER = "nnUNetTrainerTopoWarmup"
BASELINE_TRAINER = "nnUNetTrainer_TopoBudget"
REDUCED_PLANS = "nnUNetPlans_demo"
FUSED = "fused"
"""Name of the fused-models predictions (``predictions/fused``, ``fused_postprocessed``, ``fused_tuned``)."""
DEMO_FOLDS = 3
"""Folds of the demo's split: fold 0's validation cases (a third of the training cases) are what ``tune`` learns
the post-processing from, so more of them than nnU-Net's default 5 folds would leave."""


class DemoError(TopoError, RuntimeError):
    """A demo stage failed; the message names the stage and its log file."""


@dataclass
class DemoOptions:
    work: Path
    cases: int = 10
    test_cases: int = 2
    shape: tuple[int, int, int] = (64, 64, 64)
    seed: int = 0
    dataset_id: int = 990
    epochs: int = 25
    iterations: int = 25
    val_iterations: int = 4
    warmup_epochs: int = 5
    baseline: bool = True
    device: str = "auto"
    num_processes: int = 2
    reuse: bool = False
    bin_dir: Path = field(default_factory=lambda: Path(sys.executable).parent)


@dataclass
class StageResult:
    name: str
    seconds: float


class Demo:
    """Runs the pipeline stage by stage, timing each one."""

    def __init__(self, opts: DemoOptions) -> None:
        self.opts = opts
        self.work = opts.work.resolve()
        self.stages: list[StageResult] = []
        self.device = opts.device
        if self.device == "auto":
            import torch

            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.plans = "nnUNetPlans" if self.device == "cuda" else REDUCED_PLANS

    # ----------------------------------------------------------------------------------------------- layout
    @property
    def kaggle(self) -> Path:
        return self.work / "kaggle"

    @property
    def dataset_name(self) -> str:
        return f"Dataset{self.opts.dataset_id:03d}_VesuviusDemo"

    @property
    def raw_dataset(self) -> Path:
        return self.work / "nnUNet_raw" / self.dataset_name

    def env(self) -> dict[str, str]:
        return nnunet_env(
            self.work,
            data_workers=max(self.opts.num_processes - 1, 0),
            processes=self.opts.num_processes,
            topo_config=self.work / "demo_config.yaml",
        )

    # ----------------------------------------------------------------------------------------------- running
    def prepare_work_folder(self) -> None:
        if self.work.exists() and any(self.work.iterdir()):
            if not (self.work / MARKER).exists():
                raise DemoError(
                    f"{self.work} exists, is not empty and is not a demo work folder (no {MARKER} file); "
                    "choose another --work folder or empty this one"
                )
            if not self.opts.reuse:
                shutil.rmtree(self.work)
        self.work.mkdir(parents=True, exist_ok=True)
        (self.work / MARKER).write_text("created by `nnunetv2_topo demo`; safe to delete\n")
        (self.work / "logs").mkdir(exist_ok=True)

    def run_command(self, stage: str, cmd: Sequence[object]) -> None:
        """Run one console script (each argument as its str()), streaming its output to the terminal and to
        logs/<stage>.log."""
        log_path = self.work / "logs" / f"{stage}.log"
        printable = " ".join(str(c) for c in cmd)
        print(f"  $ {printable}", flush=True)
        with open(log_path, "a") as log:
            log.write(f"$ {printable}\n")
            proc = subprocess.Popen(
                [str(c) for c in cmd],
                env=self.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                bufsize=1,
            )
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if line.strip():
                    print(f"    {line.rstrip()}", flush=True)
            rc = proc.wait()
        if rc != 0:
            raise DemoError(f"stage '{stage}' failed (exit {rc}) running: {printable}\n  full log: {log_path}")

    def stage(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` as one numbered, timed stage; returns its result."""
        print(f"\n==> [{len(self.stages) + 1}] {name}", flush=True)
        t0 = time.perf_counter()
        result = fn(*args)
        self.stages.append(StageResult(name, time.perf_counter() - t0))
        print(f"    done in {self.stages[-1].seconds:.1f} s", flush=True)
        return result

    def script(self, name: str) -> str:
        path = self.opts.bin_dir / name
        return str(path) if path.exists() else name

    # ----------------------------------------------------------------------------------------------- stages
    def synthesise(self) -> None:
        o = self.opts
        self.run_command(
            "synth",
            [self.script("nnunetv2_topo"), "synth", "--output", self.kaggle, "--cases", o.cases,
             "--test-cases", o.test_cases, "--shape", *o.shape, "--seed", o.seed],
        )  # fmt: skip

    def convert(self) -> None:
        self.run_command(
            "convert",
            [self.script("nnUNetv2_convert_vesuvius"), "--input", self.kaggle, "--dataset-id", self.opts.dataset_id,
             "--name", "VesuviusDemo", "--overwrite", "-np", self.opts.num_processes,
             "--folds", min(DEMO_FOLDS, self.opts.cases)],
        )  # fmt: skip

    def plan_and_preprocess(self) -> None:
        np_ = str(self.opts.num_processes)
        self.run_command(
            "plan_and_preprocess",
            [self.script("nnUNetv2_plan_and_preprocess"), "-d", self.opts.dataset_id, "-c", "3d_fullres",
             "--verify_dataset_integrity", "-np", np_, "-npfp", np_],
        )  # fmt: skip
        if self.plans == REDUCED_PLANS:
            path = make_reduced_plans(self.work / "nnUNet_preprocessed" / self.dataset_name, name=REDUCED_PLANS)
            print(f"    CPU: wrote reduced plans {path} (few features, small patch) for a quick demo")
            # the reduced plans keep nnUNetPlans' data identifier, so the preprocessed data is shared

    def write_config(self) -> None:
        o = self.opts
        config = {
            "num_epochs": o.epochs,
            "num_iterations_per_epoch": o.iterations,
            "num_val_iterations_per_epoch": o.val_iterations,
            "warmup_epochs": o.warmup_epochs,
        }
        (self.work / "demo_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def train(self, trainer: str) -> None:
        self.run_command(
            f"train_{trainer}",
            [
                self.script("nnUNetv2_train"),
                self.opts.dataset_id,
                "3d_fullres",
                "0",
                "-tr",
                trainer,
                "-p",
                self.plans,
                "-device",
                self.device,
                "--npz",
            ],
        )  # fmt: skip  (--npz: the validation probabilities that tune learns from)

    def model_dir(self, trainer: str) -> Path:
        return self.work / "nnUNet_results" / self.dataset_name / f"{trainer}__{self.plans}__3d_fullres"

    def fold_dir(self, trainer: str) -> Path:
        return self.model_dir(trainer) / "fold_0"

    def predict(self, trainer: str) -> Path:
        out = self.work / "predictions" / trainer
        self.run_command(
            f"predict_{trainer}",
            [self.script("nnUNetv2_predict"), "-i", self.raw_dataset / "imagesTs", "-o", out,
             "-d", self.opts.dataset_id, "-c", "3d_fullres", "-tr", trainer, "-p", self.plans, "-f", "0",
             "-chk", FINAL_CHECKPOINT, "-device", self.device, "--disable_tta", "-npp", "1", "-nps", "1"],
        )  # fmt: skip
        return out

    def postprocess(self, trainer: str) -> Path:
        src = self.work / "predictions" / trainer
        out = self.work / "predictions" / f"{trainer}_postprocessed"
        self.run_command(
            f"postprocess_{trainer}",
            [self.script("nnunetv2_topo"), "postprocess", "--input", src, "--output", out],
        )
        return out

    def tune(self, trainers: Sequence[str]) -> Path:
        """Choose fusion-ready post-processing on the models' own validation probabilities (never the test cases)."""
        out = self.work / "postprocess.json"
        inputs = [arg for t in trainers for arg in ("--input", self.model_dir(t))]
        self.run_command(
            "tune",
            [self.script("nnunetv2_topo"), "tune", *inputs,
             "--gt", self.work / "nnUNet_preprocessed" / self.dataset_name / "gt_segmentations",
             "--output", out, "-np", self.opts.num_processes, "--overwrite", "--quiet"],
        )  # fmt: skip
        return out

    def predict_fused(self, trainers: Sequence[str], output: Path, config: Path | None = None) -> Path:
        """``nnunetv2_topo predict``: every model on the Kaggle test images, logits fused in memory."""
        models = [arg for t in trainers for arg in ("--model", self.model_dir(t))]
        extra = ["--config", config, "--csv", self.kaggle / "test.csv"] if config is not None else []
        self.run_command(
            f"predict_{output.stem}",
            [self.script("nnunetv2_topo"), "predict", "--input", self.kaggle / "test_images", "--output", output,
             *models, "--folds", "0", "--tta", "none", "--device", self.device, "--overwrite", "--quiet", *extra],
        )  # fmt: skip
        return output

    def unpack(self, submission: Path, name: str) -> Path:
        """The submission's volumes as a folder, so that exactly what would be uploaded is scored."""
        out = self.work / "predictions" / name
        shutil.rmtree(out, ignore_errors=True)
        with zipfile.ZipFile(submission) as zf:
            zf.extractall(out)
        return out

    def evaluate(self, pred: Path) -> dict:
        out = pred.with_name(pred.name + "_scores.json")
        self.run_command(
            f"evaluate_{pred.name}",
            [self.script("nnunetv2_topo"), "evaluate", "--input", pred, "--gt", self.kaggle / "test_labels",
             "--json", out, "-np", self.opts.num_processes],
        )  # fmt: skip
        return json.loads(out.read_text())

    def submit(self, pred: Path) -> Path:
        out = self.work / "submission.zip"
        self.run_command(
            "submit",
            [self.script("nnunetv2_topo"), "submit", "--binary-input", pred, "--images", self.kaggle / "test_images",
             "--csv", self.kaggle / "test.csv", "--output", out],
        )  # fmt: skip
        return out

    # ----------------------------------------------------------------------------------------------- driver
    def run(self) -> int:
        t_start = time.perf_counter()
        self.prepare_work_folder()
        print(f"nnunetv2-topo demo in {self.work} (device: {self.device}, plans: {self.plans})")
        self.stage("synthesise a Kaggle-layout dataset", self.synthesise)
        self.stage("convert to nnU-Net raw format", self.convert)
        self.stage("plan and preprocess", self.plan_and_preprocess)
        self.write_config()
        trainers = [TOPO_TRAINER] + ([BASELINE_TRAINER] if self.opts.baseline else [])
        scores: dict[str, dict] = {}
        for trainer in trainers:
            self.stage(f"train {trainer}", self.train, trainer)
            raw = self.stage(f"predict with {trainer}", self.predict, trainer)
            post = self.stage(f"post-process {trainer}", self.postprocess, trainer)
            for pred in (raw, post):
                scores[pred.name] = self.stage(f"evaluate {pred.name}", self.evaluate, pred)
        config = self.stage("tune post-processing on validation probabilities", self.tune, trainers)
        fused = self.stage("predict fused models", self.predict_fused, trainers, self.work / "predictions" / FUSED)
        fused_post = self.stage("post-process fused (defaults)", self.postprocess, FUSED)
        submission = self.stage(
            "predict fused + tuned -> submission.zip",
            self.predict_fused,
            trainers,
            self.work / "submission.zip",
            config,
        )
        tuned = self.unpack(submission, f"{FUSED}_tuned")
        for pred in (fused, fused_post, tuned):
            scores[pred.name] = self.stage(f"evaluate {pred.name}", self.evaluate, pred)
        self.report(scores, submission, time.perf_counter() - t_start)
        return 0

    def tuned_summary(self) -> str:
        """One line: what ``tune`` chose (the steps that differ from the defaults) and on how many cases."""
        tuned = load_postprocess_file(self.work / "postprocess.json")
        default = PostprocessConfig().to_dict()
        changed = {k: v for k, v in tuned.steps.to_dict().items() if default.get(k) != v}
        chosen = ", ".join(f"{k}={v}" for k, v in changed.items()) or "the defaults"
        return (
            f"tuned on the validation probabilities of fold 0 (never on the test cases): {chosen}; "
            f"fusion {tuned.fusion.mode}"
        )

    def report(self, scores: dict[str, dict], submission: Path, total: float) -> None:
        print("\n" + "=" * 88)
        print("Per-case competition score (test volumes against the synthetic test labels)")

        for name, result in scores.items():
            print(f"\n{name}")
            print(format_table(result))
        print("\nSide by side (mean score over the test cases; same data, plans and iteration budget)")
        header = f"{'prediction':28s} {'train s':>8s} {'argmax':>8s} {'default post-proc.':>19s} {'tuned':>8s}"
        print(header)
        print("-" * len(header))
        seconds = {st.name: st.seconds for st in self.stages}
        trainers = [t for t in (TOPO_TRAINER, BASELINE_TRAINER) if t in scores]
        for trainer in trainers:
            raw = scores[trainer]["mean"]["score"]
            post = scores[f"{trainer}_postprocessed"]["mean"]["score"]
            train_s = seconds.get(f"train {trainer}", 0.0)
            print(f"{trainer:28s} {train_s:8.1f} {raw:8.4f} {post:19.4f} {'-':>8s}")
        if FUSED in scores:
            label = f"fused ({len(trainers)} model{'s' if len(trainers) > 1 else ''})"
            raw = scores[FUSED]["mean"]["score"]
            post = scores[f"{FUSED}_postprocessed"]["mean"]["score"]
            tuned = scores[f"{FUSED}_tuned"]["mean"]["score"]
            print(f"{label:28s} {'-':>8s} {raw:8.4f} {post:19.4f} {tuned:8.4f}  <- submission.zip")
            print(self.tuned_summary())
        print("\nTime per stage")
        for st in self.stages:
            print(f"  {st.name:50s} {st.seconds:8.1f} s")
        print(f"  {'total':50s} {total:8.1f} s")
        print(f"\nsubmission:        {submission}")
        for trainer in (TOPO_TRAINER, BASELINE_TRAINER):
            png = self.fold_dir(trainer) / "progress_topo.png"
            if png.exists():
                print(f"training diagnostics: {png}")
        print(f"logs:              {self.work / 'logs'}")
