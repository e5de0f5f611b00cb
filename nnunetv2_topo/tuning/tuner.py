"""``tune()``: search, write ``postprocess.json`` (best so far, after every improvement) and the report beside it.

Ctrl-C (``KeyboardInterrupt``) or the time budget stop the search; the best configuration found so far stays
written, the report is written from what was measured, and the interrupt is raised again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypedDict

from tqdm import tqdm

from nnunetv2_topo.postprocessing.config_file import FusionSpec, PostprocessFile, save_postprocess_file
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.tuning.ensemble import EnsembleAxis, EnsembleSpace, Setting, StepAxis, ensemble_axes
from nnunetv2_topo.tuning.evaluator import CaseSource, Evaluator
from nnunetv2_topo.tuning.report import REPORT_MD, REPORT_PNG, write_markdown, write_plot
from nnunetv2_topo.tuning.search import (
    AblationRow,
    _TimeBudgetSpentError,
    ablation,
    choice_stability,
    coordinate_descent,
    cross_validate,
    step_axes,
    without_models,
)
from nnunetv2_topo.tuning.space import no_postprocessing


@dataclass
class TuneOutcome:
    best: PostprocessConfig
    summary: dict
    ablation: list[AblationRow] = field(default_factory=list)
    report_md: Path | None = None
    report_png: Path | None = None
    fusion: FusionSpec = field(default_factory=FusionSpec)


class _SearchState(TypedDict):
    best: Setting
    score: float


def start_fusion(fusion: FusionSpec, space: EnsembleSpace | None) -> FusionSpec:
    """Where the search starts: ``fusion`` as given, with equal weights spelt out when they are searched and the
    first checkpoint option of each input."""
    if space is None:
        return fusion
    n = len(fusion.inputs)
    if space.weights and n > 1:
        fusion = replace(fusion, weights=tuple(round(1.0 / n, 4) for _ in range(n)))
    if space.checkpoints:
        fusion = replace(fusion, checkpoints=tuple(options[0] for options in space.checkpoints))
    return fusion


def _measured(evaluator: Evaluator, best: Setting, start: FusionSpec, status: str, cv, seconds: float) -> dict:
    def mean_or_none(setting: Setting) -> float | None:
        return evaluator.mean(setting) if setting in evaluator.complete else None

    return {
        "status": status,
        "cases": list(evaluator.cases),
        "score_tuned": mean_or_none(best),
        "score_default": mean_or_none(Setting(start, PostprocessConfig())),
        "score_argmax": mean_or_none(Setting(start, no_postprocessing())),
        "cross_validated": cv,
        "configurations_evaluated": len(evaluator.complete),
        "tile_cache": {
            "hits": evaluator.cache.hits,
            "computed": evaluator.cache.misses,
            "hit_rate": evaluator.cache.hit_rate,
        },
        "seconds": seconds,
    }


def tune(
    sources: Sequence[CaseSource],
    output: Path,
    fusion: FusionSpec = FusionSpec(),  # noqa: B008
    gt: str = "",
    num_processes: int = 1,
    time_budget_s: float | None = None,
    cv_folds: int = 2,
    max_rounds: int = 3,
    progress: bool = True,
    ensemble: EnsembleSpace | None = None,
) -> TuneOutcome:
    """Tune the post-processing (and, with ``ensemble``, the ensemble: weights, fusion, checkpoints) on
    ``sources``; writes ``output`` (postprocess.json) and the report beside it."""
    output = Path(output)
    start_time = time.monotonic()
    deadline = None if time_budget_s is None else start_time + time_budget_s
    bar = tqdm(desc="tune", unit="eval", total=0, disable=not progress)
    start = Setting(start_fusion(fusion, ensemble), PostprocessConfig())
    state: _SearchState = {"best": start, "score": float("nan")}

    def on_progress(done: int, scheduled: int) -> None:
        if scheduled:
            bar.total += scheduled
            bar.refresh()
        if done:
            bar.update(done)
            bar.set_postfix(best=f"{state['score']:.4f}", cache=f"{evaluator.cache.hit_rate:.0%}")

    def save(best: Setting, status: str, cv: dict | None = None, extra: dict | None = None) -> None:
        measured = _measured(evaluator, best, start.fusion, status, cv, time.monotonic() - start_time)
        measured.update(extra or {})
        save_postprocess_file(output, PostprocessFile(best.fusion, best.steps, measured))

    def on_best(setting: Setting, score: float) -> None:
        state["best"], state["score"] = setting, score
        save(setting, "searching")

    axes: list[EnsembleAxis | StepAxis] = [*ensemble_axes(start.fusion, ensemble), *step_axes()]
    with Evaluator(sources, num_processes, on_progress) as evaluator:
        try:
            found = _search(evaluator, start, axes, max_rounds, deadline, cv_folds, on_best, lambda: state["best"])
        finally:
            bar.close()
    best = state["best"]
    status, rows, interrupt = found.status, found.rows, found.interrupt
    cv = cross_validate(evaluator, start, cv_folds)
    seconds = time.monotonic() - start_time
    extra: dict[str, Any] = {"stability": found.stable, "without_model": found.dropped}
    if ensemble is not None:
        extra["ensemble_search"] = [a.name for a in axes if a.name not in {s.name for s in step_axes()}]
    summary = _measured(evaluator, best, start.fusion, status, cv, seconds)
    summary.update(extra)
    if best in evaluator.complete:
        save(best, status, cv, extra)
    outcome = TuneOutcome(best.steps, summary, rows, fusion=best.fusion)
    if summary["score_default"] is not None and summary["score_argmax"] is not None:
        summary.update(
            best=best.steps,
            best_fusion=best.fusion,
            start_fusion=start.fusion,
            inputs=[str(p) for p in fusion.inputs],
            fusion=best.fusion.mode,
            gt=gt,
            gain_in_sample=summary["score_tuned"] - summary["score_default"],
        )
        _write_report(outcome, output.parent, summary, rows, evaluator, plot_error_raises=interrupt is None)
    if interrupt is not None:
        raise interrupt
    return outcome


@dataclass
class _Found:
    """What the search ended with (the best setting itself is the caller's ``on_best`` state)."""

    status: str = "converged"
    rows: list[AblationRow] = field(default_factory=list)
    stable: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    interrupt: BaseException | None = None


def _search(evaluator: Evaluator, start: Setting, axes, max_rounds, deadline, cv_folds, on_best, best) -> _Found:
    """The coordinate descent, then the ablation, the choice stability and the without-one-model scores of the best
    setting (``best()``); a spent time budget or Ctrl-C ends it early with the best so far."""
    found = _Found()
    try:
        evaluator.evaluate([start, Setting(start.fusion, no_postprocessing())])
        coordinate_descent(evaluator, start, max_rounds=max_rounds, deadline=deadline, on_best=on_best, axes=axes)
        found.rows = ablation(evaluator, best())
        if len(evaluator.cases) >= 2:
            found.stable = choice_stability(evaluator, axes, best(), cv_folds)
            found.dropped = without_models(evaluator, best())
    except _TimeBudgetSpentError:
        found.status = "stopped by the time budget"
    except KeyboardInterrupt as exc:
        found.status, found.interrupt = "interrupted (Ctrl-C)", exc
    return found


def _write_report(
    outcome: TuneOutcome, folder: Path, summary: dict, rows, evaluator: Evaluator, plot_error_raises: bool
) -> None:
    """tune_report.md and its plot beside postprocess.json; a plot that cannot be written is named in the report
    (and raised after it when ``plot_error_raises``)."""
    outcome.report_md = folder / REPORT_MD
    png = folder / REPORT_PNG
    plot_error: OSError | None = None
    try:  # the plot first: the report links it only once it is written
        write_plot(evaluator, png)
        outcome.report_png = png
    except OSError as exc:
        plot_error = exc
    plot = REPORT_PNG if plot_error is None else f"{type(plot_error).__name__}: {plot_error.strerror or plot_error}"
    write_markdown(outcome.report_md, summary, rows, evaluator, plot=plot)
    if plot_error is not None and plot_error_raises:
        raise plot_error
