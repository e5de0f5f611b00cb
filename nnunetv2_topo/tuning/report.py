"""``tune_report.md`` and ``tune_report.png``: what ``tune`` measured, written beside ``postprocess.json``."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import fields, replace
from pathlib import Path

from nnunetv2_topo.io import atomic_path, atomic_write_text
from nnunetv2_topo.metrics.score_fields import SCORE_TITLES
from nnunetv2_topo.tuning.ensemble import describe_fusion, describe_setting
from nnunetv2_topo.tuning.evaluator import RESULT_KEYS, Evaluator
from nnunetv2_topo.tuning.search import AblationRow
from nnunetv2_topo.tuning.space import describe, no_postprocessing

REPORT_MD = "tune_report.md"
REPORT_PNG = "tune_report.png"
COLUMN_TITLES = SCORE_TITLES


def _header(*first: str, last: tuple[str, ...] = ()) -> list[str]:
    titles = [*first, *(COLUMN_TITLES[k] for k in RESULT_KEYS), *last]
    return ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]


def _scores(means: dict) -> str:
    return " | ".join(f"{means[k]:.4f}" for k in RESULT_KEYS)


def ablation_table(rows: list[AblationRow]) -> str:
    """The step-by-step table (Markdown), one row per added step, with the gain over the row above."""
    lines = _header("configuration", last=("gain",))
    last = None
    for row in rows:
        m = row.means
        gain = "" if last is None else f"{m['score'] - last:+.4f}"
        lines.append(f"| {row.label} | {_scores(m)} | {gain} |")
        last = m["score"]
    return "\n".join(lines)


def write_plot(evaluator: Evaluator, path: Path, max_lines: int = 8) -> None:
    """Mean score, topo, SD and VOI versus threshold, one line per setting of the other steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    none = no_postprocessing()
    groups: dict = defaultdict(list)
    fusions = {s.fusion for s in evaluator.complete}
    for setting in evaluator.complete:
        config = setting.steps
        steps = tuple((f.name, getattr(config, f.name)) for f in fields(config) if f.name != "threshold")
        groups[(setting.fusion, steps)].append(setting)
    lines = sorted(
        (g for g in groups.values() if len(g) >= 2),
        key=lambda g: -max(evaluator.mean(c) for c in g),
    )[:max_lines]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    for ax, key in zip(axes.ravel(), RESULT_KEYS, strict=True):
        for group in lines:
            group = sorted(group, key=lambda c: c.steps.threshold)
            label = describe(replace(group[0].steps, threshold=none.threshold), none).replace("(same)", "no steps")
            if len(fusions) > 1:
                label = f"{describe_fusion(group[0].fusion)}; {label}"
            ax.plot(
                [c.steps.threshold for c in group], [evaluator.mean(c, key) for c in group], marker="o", label=label
            )
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
    start = "" if summary["start_fusion"] == summary["best_fusion"] else f"; {describe_fusion(summary['start_fusion'])}"
    lines = [
        "# nnunetv2_topo tune report",
        "",
        f"- inputs: {', '.join(summary['inputs'])} (chosen fusion: {describe_fusion(summary['best_fusion'])})",
        f"- ground truth: {summary['gt']}",
        f"- cases: {len(evaluator.cases)} ({', '.join(evaluator.cases[:12])}{more})",
        f"- configurations evaluated on every case: {len(evaluator.complete)}; wall time {summary['seconds']:.0f} s",
        f"- Betti-matching tile cache: {evaluator.cache.hits} hits, {evaluator.cache.misses} computed "
        f"(hit rate {evaluator.cache.hit_rate:.1%})",
        f"- status: {summary['status']}",
        "",
        "Strategy: coordinate descent over grids: "
        + (
            f"the ensemble first ({', '.join(summary['ensemble_search'])}; each value at every threshold), then "
            if summary.get("ensemble_search")
            else ""
        )
        + "the threshold, then each step in pipeline order, repeated until a round changes nothing; every "
        "configuration scored with the exact competition metric.",
        "",
        "## Scores (mean over cases)",
        "",
        f"- raw argmax (threshold 0.5, no steps{start}): {summary['score_argmax']:.4f}",
        f"- default `postprocess`{start}: {summary['score_default']:.4f}",
        f"- tuned, in-sample: {summary['score_tuned']:.4f} (gain over default {summary['gain_in_sample']:+.4f})",
    ]
    if cv is not None:
        lines.append(
            f"- tuned, cross-validated ({cv['folds']} folds, chosen on the other folds' cases): "
            f"{cv['heldout_score']:.4f} (gain over default {cv['gain']:+.4f}, 95 % interval "
            f"{_ci(cv['gain_ci'])}{' — includes 0' if cv['gain_includes_zero'] else ''})"
        )
    else:
        lines.append("- cross-validated estimate: needs at least two cases")
    lines += ["", f"Best configuration: `{describe_fusion(summary['best_fusion'])}; {describe(summary['best'])}`", ""]
    lines += stability_section(summary.get("stability") or [], summary.get("without_model") or [], evaluator.cases)
    lines += ["## Ablation (none → + each step)", ""]
    lines += [ablation_table(rows) if rows else "(not computed: the search was interrupted)", ""]
    lines += ["## Best configurations", ""]
    lines += _header("#", "configuration")
    ranked = sorted(evaluator.complete, key=lambda c: -evaluator.mean(c))[:top]
    for i, config in enumerate(ranked, 1):
        means = _scores({k: evaluator.mean(config, k) for k in RESULT_KEYS})
        lines.append(f"| {i} | {describe_setting(config, len({s.fusion for s in ranked}) > 1)} | {means} |")
    if plot == REPORT_PNG:
        lines += ["", f"Plot: {REPORT_PNG} (score and components versus threshold, one line per setting of the steps)"]
    elif plot:
        lines += ["", f"Plot: not written ({plot})"]
    atomic_write_text(path, "\n".join(lines + [""]))


def _mark(d: dict, cv: dict | None) -> str:
    if not any(d["per_case"]):
        return "*tie*"
    if cv is not None and cv["ci"][1] < 0:
        return "**reversed held-out**"
    return "**within noise**" if d["includes_zero"] or (cv is not None and cv["includes_zero"]) else ""


def _ci(ci) -> str:
    return f"[{ci[0]:+.4f}, {ci[1]:+.4f}]"


def stability_section(stable: list[dict], dropped: list[dict], cases: list[str]) -> list[str]:
    """How sure each choice is (:mod:`nnunetv2_topo.tuning.stability`) and what each model contributes."""
    if not stable and not dropped:
        return []
    lines = [
        "## How sure is each choice",
        "",
        "Per searched coordinate, the chosen value against the runner-up (the best other value, the rest of the "
        "setting kept; on an ensemble coordinate each value at its best threshold): mean paired difference over "
        "the cases with its bootstrap 95 % interval, the share of bootstrap resamples of the cases in which the "
        "chosen value still wins, and the cross-validated gain (winner minus runner-up chosen on the other folds, "
        "measured on the held-out fold). **within noise**: an interval includes 0, the cases do not separate "
        "the two values; **reversed held-out**: the cross-validated interval lies below 0 (chosen on some cases, the "
        "runner-up wins on the others); *tie*: the two give the same score on every case.",
        "",
        "| coordinate | chosen | runner-up | difference | 95 % interval | wins | cross-validated | 95 % interval | |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in stable:
        d, cv = r["difference"], r["cross_validated"]
        cvs = ("", "") if cv is None else (f"{cv['mean']:+.4f}", _ci(cv["ci"]))
        lines.append(
            f"| {r['axis']} | {r['chosen']} | {r['runner_up']} | {d['mean']:+.4f} | {_ci(d['ci'])} | "
            f"{r['win_rate']:.0%} | {cvs[0]} | {cvs[1]} | {_mark(d, cv)} |"
        )
    lines.append("")
    if dropped:
        lines += [
            "Without model k (its weight set to 0, the threshold chosen again):",
            "",
            "| model | score without it | threshold | loss without it | 95 % interval | |",
            "|---|---|---|---|---|---|",
        ]
        for r in dropped:
            d = r["difference"]
            mark = _mark(d, None)
            lines.append(
                f"| {r['input']} | {r['score_without']:.4f} | {r['threshold_without']} | {d['mean']:+.4f} | "
                f"{_ci(d['ci'])} | {mark} |"
            )
        lines.append("")
    if stable:
        lines += ["Per-case paired differences (chosen − runner-up):", ""]
        lines.append("| case | " + " | ".join(r["axis"] for r in stable) + " |")
        lines.append("|---|" + "---|" * len(stable))
        for i, case in enumerate(cases):
            lines.append(f"| {case} | " + " | ".join(f"{r['difference']['per_case'][i]:+.4f}" for r in stable) + " |")
        lines.append("")
    return lines
