"""``tune()``: search, write ``postprocess.json`` (best so far, after every improvement) and the report beside it.

Ctrl-C (``KeyboardInterrupt``) or the time budget stop the search; the best configuration found so far stays
written, the report is written from what was measured, and the interrupt is raised again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnunetv2_topo.postprocessing.config_file import FusionSpec, PostprocessFile, save_postprocess_file
from nnunetv2_topo.postprocessing.steps import PostprocessConfig
from nnunetv2_topo.tuning.evaluator import CaseSource, Evaluator
from nnunetv2_topo.tuning.report import REPORT_MD, REPORT_PNG, write_markdown, write_plot
from nnunetv2_topo.tuning.search import (
    AblationRow,
    TimeBudgetSpentError,
    ablation,
    coordinate_descent,
    cross_validate,
)
from nnunetv2_topo.tuning.space import no_postprocessing


@dataclass
class TuneOutcome:
    best: PostprocessConfig
    summary: dict
    ablation: list[AblationRow] = field(default_factory=list)
    report_md: Path | None = None
    report_png: Path | None = None


def _measured(evaluator: Evaluator, best: PostprocessConfig, status: str, cv: dict | None, seconds: float) -> dict:
    def mean_or_none(config: PostprocessConfig) -> float | None:
        return evaluator.mean(config) if config in evaluator.complete else None

    return {
        "status": status,
        "cases": list(evaluator.cases),
        "score_tuned": mean_or_none(best),
        "score_default": mean_or_none(PostprocessConfig()),
        "score_argmax": mean_or_none(no_postprocessing()),
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
) -> TuneOutcome:
    """Tune the post-processing on ``sources``; writes ``output`` (postprocess.json) and the report beside it."""
    from tqdm import tqdm

    output = Path(output)
    start_time = time.monotonic()
    deadline = None if time_budget_s is None else start_time + time_budget_s
    bar = tqdm(desc="tune", unit="eval", total=0, disable=not progress)
    state = {"best": PostprocessConfig(), "score": float("nan")}

    def on_progress(done: int, scheduled: int) -> None:
        if scheduled:
            bar.total += scheduled
            bar.refresh()
        if done:
            bar.update(done)
            bar.set_postfix(best=f"{state['score']:.4f}", cache=f"{evaluator.cache.hit_rate:.0%}")

    def save(best: PostprocessConfig, status: str, cv: dict | None = None) -> None:
        measured = _measured(evaluator, best, status, cv, time.monotonic() - start_time)
        save_postprocess_file(output, PostprocessFile(fusion, best, measured))

    def on_best(config: PostprocessConfig, score: float) -> None:
        state["best"], state["score"] = config, score
        save(config, "searching")

    status = "converged"
    rows: list[AblationRow] = []
    interrupt: BaseException | None = None
    with Evaluator(sources, num_processes, on_progress) as evaluator:
        try:
            evaluator.evaluate([PostprocessConfig(), no_postprocessing()])
            coordinate_descent(
                evaluator, PostprocessConfig(), max_rounds=max_rounds, deadline=deadline, on_best=on_best
            )
            rows = ablation(evaluator, state["best"])
        except TimeBudgetSpentError:
            status = "stopped by the time budget"
        except KeyboardInterrupt as exc:
            status, interrupt = "interrupted (Ctrl-C)", exc
        finally:
            bar.close()
    best = state["best"]
    cv = cross_validate(evaluator, PostprocessConfig(), cv_folds)
    seconds = time.monotonic() - start_time
    summary = _measured(evaluator, best, status, cv, seconds)
    if best in evaluator.complete:
        save(best, status, cv)
    outcome = TuneOutcome(best, summary, rows)
    if summary["score_default"] is not None and summary["score_argmax"] is not None:
        summary.update(
            best=best,
            inputs=[str(p) for p in fusion.inputs],
            fusion=fusion.mode,
            gt=gt,
            gain_in_sample=summary["score_tuned"] - summary["score_default"],
        )
        outcome.report_md = output.parent / REPORT_MD
        png = output.parent / REPORT_PNG
        plot_error: OSError | None = None
        try:  # the plot first: the report links it only once it is written
            write_plot(evaluator, png)
            outcome.report_png = png
        except OSError as exc:
            plot_error = exc
        plot = REPORT_PNG if plot_error is None else f"{type(plot_error).__name__}: {plot_error.strerror or plot_error}"
        write_markdown(outcome.report_md, summary, rows, evaluator, plot=plot)
        if plot_error is not None and interrupt is None:
            raise plot_error
    if interrupt is not None:
        raise interrupt
    return outcome
