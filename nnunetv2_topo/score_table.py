"""The score table: per-case rows and the mean of an evaluation result (``nnunetv2_topo evaluate``, the demo)."""

from __future__ import annotations

__all__ = ["format_table"]


def format_table(result: dict) -> str:
    """The per-case table and the mean as fixed-width text."""
    cases = result["cases"]
    width = max([len("case"), len("mean"), *(len(c) for c in cases)])
    head = f"{'case':<{width}}  {'score':>7}  {'topo':>7}  {'SD':>7}  {'VOI':>7}  {'split':>7}  {'merge':>7}"
    lines = [head, "-" * len(head)]
    for cid, r in cases.items():
        lines.append(
            f"{cid:<{width}}  {r['score']:7.4f}  {r['topo']:7.4f}  {r['surface_dice']:7.4f}  {r['voi_score']:7.4f}"
            f"  {r['voi_split']:7.3f}  {r['voi_merge']:7.3f}"
        )
    m = result["mean"]
    lines.append("-" * len(head))
    lines.append(
        f"{'mean':<{width}}  {m['score']:7.4f}  {m['topo']:7.4f}  {m['surface_dice']:7.4f}  {m['voi_score']:7.4f}"
    )
    return "\n".join(lines)
