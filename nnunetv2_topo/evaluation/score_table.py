"""The score table: per-case rows and the mean of an evaluation result (``nnunetv2_topo evaluate``, the demo)."""

from __future__ import annotations

from nnunetv2_topo.metrics.score_fields import SCORE_FIELDS, SCORE_TITLES

__all__ = ["format_table"]


def format_table(result: dict) -> str:
    """The per-case table (:data:`~nnunetv2_topo.metrics.score_fields.SCORE_FIELDS`, then VOI split and merge) and
    the mean as fixed-width text."""
    cases = result["cases"]
    width = max([len("case"), len("mean"), *(len(c) for c in cases)])
    head = f"{'case':<{width}}" + "".join(f"  {SCORE_TITLES[k]:>7}" for k in SCORE_FIELDS)
    head += f"  {'split':>7}  {'merge':>7}"
    lines = [head, "-" * len(head)]
    for cid, r in cases.items():
        row = f"{cid:<{width}}" + "".join(f"  {r[k]:7.4f}" for k in SCORE_FIELDS)
        lines.append(row + f"  {r['voi_split']:7.3f}  {r['voi_merge']:7.3f}")
    lines.append("-" * len(head))
    lines.append(f"{'mean':<{width}}" + "".join(f"  {result['mean'][k]:7.4f}" for k in SCORE_FIELDS))
    return "\n".join(lines)
