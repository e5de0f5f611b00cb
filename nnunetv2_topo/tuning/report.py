"""``tune_report.md`` and ``tune_report.png``: what ``tune`` measured, written beside ``postprocess.json``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields, replace
from pathlib import Path

from nnunetv2_topo.io import atomic_path, atomic_write_text
from nnunetv2_topo.tuning.evaluator import RESULT_KEYS, Evaluator
from nnunetv2_topo.tuning.search import AblationRow
from nnunetv2_topo.tuning.space import describe, no_postprocessing

REPORT_MD = "tune_report.md"
REPORT_PNG = "tune_report.png"
COLUMN_TITLES = {"score": "score", "topo": "topo", "surface_dice": "SD", "voi_score": "VOI"}


def ablation_table(rows: list[AblationRow]) -> str:
    """The step-by-step table (Markdown), one row per added step, with the gain over the row above."""
    lines = ["| configuration | score | topo | SD | VOI | gain |", "|---|---|---|---|---|---|"]
    last = None
    for row in rows:
        m = row.means
        gain = "" if last is None else f"{m['score'] - last:+.4f}"
        lines.append(
            f"| {row.label} | {m['score']:.4f} | {m['topo']:.4f} | {m['surface_dice']:.4f} | "
            f"{m['voi_score']:.4f} | {gain} |"
        )
        last = m["score"]
    return "\n".join(lines)


def write_plot(evaluator: Evaluator, path: Path, max_lines: int = 8) -> None:
    """Mean score, topo, SD and VOI versus threshold, one line per setting of the other steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    none = no_postprocessing()
    groups: dict = defaultdict(list)
    for config in evaluator.complete:
        steps = tuple((f.name, getattr(config, f.name)) for f in fields(config) if f.name != "threshold")
        groups[steps].append(config)
    lines = sorted(
        (g for g in groups.values() if len(g) >= 2),
        key=lambda g: -max(evaluator.mean(c) for c in g),
    )[:max_lines]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for ax, key in zip(axes.ravel(), RESULT_KEYS, strict=True):
        for group in lines:
            group = sorted(group, key=lambda c: c.threshold)
            label = describe(replace(group[0], threshold=none.threshold), none).replace("(same)", "no steps")
            ax.plot([c.threshold for c in group], [evaluator.mean(c, key) for c in group], marker="o", label=label)
        ax.set_title(f"mean {COLUMN_TITLES[key]} over {len(evaluator.cases)} case(s)")
        ax.set_xlabel("threshold")
        ax.grid(alpha=0.3)
    if lines:
        axes[0, 0].legend(fontsize=7, title="other steps (vs none)", title_fontsize=7)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)


def write_markdown(
    path: Path,
    summary: dict,
    rows: list[AblationRow],
    evaluator: Evaluator,
    top: int = 10,
    plot: str | None = REPORT_PNG,
) -> None:
    """The report: inputs, scores, cross-validated gain, cache, ablation table and the best configurations.

    ``plot``: the plot's file name to link, or what went wrong drawing it (``plot_error``), or None for no line."""
    cv = summary.get("cross_validated")
    more = " …" if len(evaluator.cases) > 12 else ""
    lines = [
        "# nnunetv2_topo tune report",
        "",
        f"- inputs: {', '.join(summary['inputs'])} (fusion {summary['fusion']})",
        f"- ground truth: {summary['gt']}",
        f"- cases: {len(evaluator.cases)} ({', '.join(evaluator.cases[:12])}{more})",
        f"- configurations evaluated on every case: {len(evaluator.complete)}; wall time {summary['seconds']:.0f} s",
        f"- Betti-matching tile cache: {evaluator.cache.hits} hits, {evaluator.cache.misses} computed "
        f"(hit rate {evaluator.cache.hit_rate:.1%})",
        f"- status: {summary['status']}",
        "",
        "Strategy: coordinate descent over grids, threshold first, then each step in pipeline order, repeated "
        "until a round changes nothing; every configuration scored with the exact competition metric.",
        "",
        "## Scores (mean over cases)",
        "",
        f"- raw argmax (threshold 0.5, no steps): {summary['score_argmax']:.4f}",
        f"- default `postprocess`: {summary['score_default']:.4f}",
        f"- tuned, in-sample: {summary['score_tuned']:.4f} (gain over default {summary['gain_in_sample']:+.4f})",
    ]
    if cv is not None:
        lines.append(
            f"- tuned, cross-validated ({cv['folds']} folds, chosen on the other folds' cases): "
            f"{cv['heldout_score']:.4f} (gain over default {cv['gain']:+.4f})"
        )
    else:
        lines.append("- cross-validated estimate: needs at least two cases")
    lines += ["", f"Best configuration: `{describe(summary['best'])}`", "", "## Ablation (none → + each step)", ""]
    lines += [ablation_table(rows) if rows else "(not computed: the search was interrupted)", ""]
    lines += ["## Best configurations", ""]
    lines += ["| # | configuration | score | topo | SD | VOI |", "|---|---|---|---|---|---|"]
    ranked = sorted(evaluator.complete, key=lambda c: -evaluator.mean(c))[:top]
    for i, config in enumerate(ranked, 1):
        m = {k: evaluator.mean(config, k) for k in RESULT_KEYS}
        lines.append(
            f"| {i} | {describe(config)} | {m['score']:.4f} | {m['topo']:.4f} | {m['surface_dice']:.4f} | "
            f"{m['voi_score']:.4f} |"
        )
    if plot == REPORT_PNG:
        lines += ["", f"Plot: {REPORT_PNG} (score and components versus threshold, one line per setting of the steps)"]
    elif plot:
        lines += ["", f"Plot: not written ({plot})"]
    atomic_write_text(path, "\n".join(lines + [""]))
