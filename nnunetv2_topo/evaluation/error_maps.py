"""``evaluate --errors DIR``: per case an error volume and an error list, and a table of what each kind costs.

Per case ``<id>.errors.tif`` (uint8 codes, :data:`~nnunetv2_topo.metrics.error_map.ERROR_CODES`) and
``<id>.errors.json``; after all cases ``summary.json`` and ``summary.txt`` (:func:`format_error_summary`). Every
file is written atomically; the folder is checked by the caller before any work.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nnunetv2_topo.io import atomic_write_text, write_tiff
from nnunetv2_topo.metrics.error_map import COST_KINDS, ERROR_CODES, ErrorReport, find_errors
from nnunetv2_topo.metrics.leaderboard import SURFACE_TOLERANCE

__all__ = ["ErrorMapWriter", "error_map_names", "format_error_summary", "summarize_costs"]

CONNECTIVITY = {
    "components": "26 (sheets and predicted components, as the metric's VOI)",
    "betti": "6-connected foreground per octant tile (as the metric's TopoScore)",
}
COST_PARTS = ("topo", "surface_dice", "voi", "score")


def error_map_names(cid: str) -> tuple[str, str]:
    """The error volume's and the error list's file names of case ``cid``."""
    return f"{cid}.errors.tif", f"{cid}.errors.json"


def case_document(cid: str, result: dict, report: ErrorReport, dust_size: int) -> dict:
    """The ``<id>.errors.json`` content."""
    errors = [{"id": n, **err} for n, err in enumerate(report.errors, start=1)]
    return {
        "case": cid,
        "score": result,
        "score_lost": 1.0 - result["score"],
        "codes": ERROR_CODES,
        "connectivity": CONNECTIVITY,
        "dust_size": dust_size,
        "costs": report.costs,
        "errors": errors,
    }


def summarize_costs(costs: dict[str, dict[str, dict]]) -> dict:
    """Across cases (``{case: per-kind cost table}``): per kind the errors, the cases with one, the voxels and the
    mean score lost per case through each part; rows sorted by the score lost, largest first."""
    n = max(len(costs), 1)
    rows = {}
    for kind in COST_KINDS:
        tables = [c[kind] for c in costs.values()]
        rows[kind] = {
            "errors": int(sum(t["count"] for t in tables)),
            "cases": int(sum(1 for t in tables if t["count"] or t["score"] > 1e-12)),
            "voxels": int(sum(t["voxels"] for t in tables)),
            **{part: float(sum(t[part] for t in tables) / n) for part in COST_PARTS},
        }
    total = sum(r["score"] for r in rows.values())
    for row in rows.values():
        row["share"] = row["score"] / total if total > 0 else 0.0
    ordered = dict(sorted(rows.items(), key=lambda kv: -kv[1]["score"]))
    return {"cases": len(costs), "mean_score_lost": total, "kinds": ordered, "costliest": next(iter(ordered))}


def format_error_summary(summary: dict) -> str:
    """The summary as a fixed-width table (mean score lost per case, by kind and part)."""
    head = f"{'error kind':<15}{'errors':>7}{'cases':>7}{'voxels':>11}"
    head += f"{'topo':>9}{'SD':>9}{'VOI':>9}{'score':>9}{'share':>7}"
    lines = [f"where the score is lost (mean over {summary['cases']} case(s); costs are score points):", head]
    lines.append("-" * len(head))
    for kind, r in summary["kinds"].items():
        counted = "-" if kind == "boundary" else str(r["errors"])
        lines.append(
            f"{kind:<15}{counted:>7}{r['cases']:>7}{r['voxels']:>11}{r['topo']:>9.4f}{r['surface_dice']:>9.4f}"
            f"{r['voi']:>9.4f}{r['score']:>9.4f}{100 * r['share']:>6.1f}%"
        )
    lines.append("-" * len(head))
    lines.append(f"{'total':<67}{summary['mean_score_lost']:>9.4f}")
    lines.append(f"costliest: {summary['costliest']}")
    return "\n".join(lines)


class ErrorMapWriter:
    """The ``diagnose`` callback of :func:`~nnunetv2_topo.evaluation.folder_scoring.evaluate_folders`: writes each
    case's error volume and list into ``folder`` (created if missing; the command checks it first) and keeps its cost
    table for :meth:`write_summary`."""

    def __init__(self, folder: str | Path, dust_size: int, tau: float = SURFACE_TOLERANCE) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dust_size = int(dust_size)
        self.tau = tau
        self.costs: dict[str, dict] = {}
        self.written: list[str] = []

    def __call__(self, cid: str, result: dict, pred_fg: np.ndarray, gt_fg: np.ndarray, tile_counts: list) -> None:
        report = find_errors(pred_fg, gt_fg, tile_counts, result, self.dust_size, self.tau)
        volume, listing = error_map_names(cid)
        write_tiff(self.folder / volume, report.labels)
        document = case_document(cid, result, report, self.dust_size)
        atomic_write_text(self.folder / listing, json.dumps(document, indent=1) + "\n")
        self.costs[cid] = report.costs
        self.written += [volume, listing]

    def write_summary(self) -> dict:
        """Write ``summary.json`` and ``summary.txt``; returns the summary."""
        summary = summarize_costs(self.costs)
        atomic_write_text(self.folder / "summary.json", json.dumps(summary, indent=1) + "\n")
        atomic_write_text(self.folder / "summary.txt", format_error_summary(summary) + "\n")
        self.written += ["summary.json", "summary.txt"]
        return summary
