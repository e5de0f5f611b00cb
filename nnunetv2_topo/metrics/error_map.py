"""Where a prediction loses its score: merges, splits, missed sheets, false positives and dust, each with its cost.

Inputs are the two foreground masks the metric scores (:func:`~nnunetv2_topo.metrics.leaderboard.binarize_pair`:
the ignore label 2 already removed from both), the per-tile Betti-matching counts and the score. Components are
26-connected, as in the metric's VOI: **sheets** are the 26-components of the ground truth, **predicted
components** those of the prediction. Every voxel of the union gets one code (:data:`ERROR_CODES`):

* ``merge`` (1): a predicted component that meets ≥ 2 sheets; marked are its **bridges**, the 26-components of its
  prediction-only voxels that touch (26-adjacent) voxels of ≥ 2 different sheets. Every path between two sheets
  inside the component crosses one, so a merge always has a bridge.
* ``split`` (2): a sheet that meets ≥ 2 predicted components; marked are its **gaps**, the 26-components of its
  ground-truth-only voxels that touch ≥ 2 different predicted components (the dual of a bridge).
* ``missed`` (3): a sheet no predicted voxel meets; the whole sheet.
* ``false_positive`` (4) / ``dust`` (5): a predicted component that meets no sheet, of ≥ / < ``dust_size`` voxels.
* ``extra`` (6) / ``missing`` (7): every other prediction-only / ground-truth-only voxel (too thick, shifted,
  holes, partly covered sheets): the **boundary** errors, not listed one by one.
* 0: background, the ignored region and voxels both masks agree on.

Each listed error carries what it costs, so that the costs of all errors plus the boundary remainder are exactly the
score lost, ``1 - score = 0.30·(1 - topo) + 0.35·(1 - SD) + 0.35·(1 - VOI_score)``:

* **VOI**: ``merge`` and ``split`` decompose exactly over the cells of the contingency table (n_ij = voxels of
  predicted component i in sheet j, 0 = the other mask's background; N = union). By the chain rule a predicted
  component's share ``(n_i/N)·H(G | P=i)`` is its "extra voxels" part plus ``(m_i/N)·H(sheet | P=i, on a sheet)``
  (m_i = its voxels on sheets): the second part is the **merge** error's merge bits. Likewise a sheet's
  ``(c_j/N)·H(P | G=j, covered)`` (c_j = its predicted voxels) is the **split** error's split bits. A missed sheet
  costs its cell of the prediction's background, ``-(n_0j/N)·log2(n_0j/n_0)`` merge bits; a false positive or dust
  component its cell of the ground truth's background, ``-(n_i0/N)·log2(n_i0/n_·0)`` split bits. The VOI score lost
  is shared in proportion to the bits: ``0.35·(1 - VOI_score)·bits/(split + merge)``.
* **TopoScore**: ``1 - TopoScore = Σ_k cost_k·unmatched_k`` exactly (:func:`~nnunetv2_topo.metrics.
  error_attribution.topo_feature_costs`). Per octant tile, an error's region has a predicted side A (its predicted
  component(s)) and a ground-truth side B (its sheet(s)); ``Δ = betti(A ∩ tile) − betti(B ∩ tile)`` per dimension.
  A positive Δ_k claims that many unmatched prediction pairs of the tile, a negative one unmatched ground-truth
  pairs, never more than the tile has left: errors claim in the order false positive, dust, missed, merge, split.
  Unclaimed unmatched pairs (holes and handles inside sheets) are boundary.
* **SurfaceDice**: ``1 - SD`` is the area of the surface elements farther than τ from the other surface over the
  total area. A missing element of the prediction's surface belongs to the predicted component of its 2×2×2 block
  (one: the block's voxels are 26-adjacent), of the ground truth's to the sheet; it goes to the error whose marked
  voxels lie in the block (a bridge, a false positive or dust; a gap or a missed sheet), else to boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cc3d
import numpy as np

from nnunetv2_topo.metrics.error_attribution import corner_blocks, label_betti, topo_feature_costs
from nnunetv2_topo.metrics.score_fields import WEIGHTS
from nnunetv2_topo.metrics.surface_dice import surface_misses
from nnunetv2_topo.metrics.topo_score import tile_slices

__all__ = ["COST_KINDS", "ERROR_CODES", "ERROR_KINDS", "ErrorReport", "find_errors"]

ERROR_CODES = {"merge": 1, "split": 2, "missed": 3, "false_positive": 4, "dust": 5, "extra": 6, "missing": 7}
"""Voxel codes of the error volume (0 = no error, background or ignored)."""
ERROR_KINDS = ("merge", "split", "missed", "false_positive", "dust")
"""The errors listed one by one."""
COST_KINDS = (*ERROR_KINDS, "boundary")
"""The rows of the cost table: the listed kinds and the remainder (``extra``/``missing`` voxels, holes, handles)."""
CLAIM_ORDER = ("false_positive", "dust", "missed", "merge", "split")
"""Order in which errors claim a tile's unmatched Betti pairs."""
PARTS = ("topo", "surface_dice", "voi")


@dataclass
class ErrorReport:
    """One case: ``labels`` (uint8, :data:`ERROR_CODES`), ``errors`` (one dict per listed error) and ``costs``
    (per :data:`COST_KINDS`: ``count``, ``voxels``, ``voi_bits`` and the score lost through each part and in all)."""

    labels: np.ndarray
    errors: list[dict] = field(default_factory=list)
    costs: dict[str, dict] = field(default_factory=dict)


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    labels, n = cc3d.connected_components(mask, connectivity=26, return_N=True)
    return labels.astype(np.uint32, copy=False), int(n)


def _contingency(lp: np.ndarray, lg: np.ndarray, union: np.ndarray, n_g: int) -> tuple[np.ndarray, ...]:
    """Non-zero cells ``(i, j, n_ij)`` over the union's voxels."""
    key = lp[union].astype(np.int64) * (n_g + 1) + lg[union].astype(np.int64)
    if key.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    size = (int(lp.max()) + 1) * (n_g + 1)
    if size <= max(4 * key.size, 1 << 20):
        counts = np.bincount(key, minlength=size)
        cells = np.flatnonzero(counts)
        n = counts[cells]
    else:
        cells, n = np.unique(key, return_counts=True)
    return cells // (n_g + 1), cells % (n_g + 1), n.astype(np.int64)


def _bits(n: np.ndarray, total: np.ndarray | int, union: int) -> np.ndarray:
    """``-(n/N)·log2(n/total)`` per cell."""
    return -(n / union) * np.log2(n / total)


def _touching(graph: np.ndarray, n_owner: int) -> dict[int, set]:
    """For each label ``1..n_owner`` of ``graph``: the set of labels ``> n_owner`` (minus ``n_owner``) its voxels are
    26-adjacent to."""
    found: dict[int, set] = {}
    for a, b in cc3d.region_graph(graph, connectivity=26):
        a, b = sorted((int(a), int(b)))
        if 0 < a <= n_owner < b:
            found.setdefault(a, set()).add(b - n_owner)
    return found


def _box_of(stats: Mapping[str, Any], ids: Sequence[int] | np.ndarray) -> tuple[slice, ...]:
    boxes = [stats["bounding_boxes"][i] for i in ids]
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _bridges(
    side: np.ndarray, lab: np.ndarray, n_lab: int, other_lab: np.ndarray, who: np.ndarray, stats: Mapping | None
) -> tuple[np.ndarray, np.ndarray]:
    """Components of ``side`` (one mask's voxels outside the other) inside the components ``who`` of ``lab`` that touch
    ≥ 2 different ``other_lab`` labels on the two masks' overlap: bridges (merges) or gaps (splits). Returns the
    labelled ``side`` and a boolean lookup over its labels."""
    pieces, n_pieces = _label(side)
    marked = np.zeros(n_pieces + 1, bool)
    if who.size == 0 or n_pieces == 0:
        return pieces, marked
    inside = np.zeros(n_lab + 1, bool)
    inside[who] = True
    assert stats is not None, "components in who: the mask has components, so cc3d statistics"
    box = _box_of(stats, who)
    keep = inside[lab[box]]
    own = side[box]
    graph = np.zeros(keep.shape, np.uint32)
    both = keep & ~own  # the components' voxels in both masks, labelled by the other mask's component
    graph[both] = other_lab[box][both] + np.uint32(n_pieces)
    keep &= own  # the components' one-mask voxels, labelled by their piece
    graph[keep] = pieces[box][keep]
    for piece, labels in _touching(graph, n_pieces).items():
        if len(labels) >= 2:
            marked[piece] = True
    return pieces, marked


def _marked_stats(codes: np.ndarray, labels: np.ndarray, kinds: Sequence[str]) -> dict[int, tuple]:
    """``{label: (voxels, (start, stop), centroid)}`` of the voxels coded as one of ``kinds``, grouped by ``labels``
    (from the coordinates of those voxels only: they are few next to the volume)."""
    coords = np.nonzero(np.isin(codes, [ERROR_CODES[k] for k in kinds]))
    if coords[0].size == 0:
        return {}
    keys = labels[coords].astype(np.int64)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    points = np.stack([c[order] for c in coords], axis=1).astype(np.int64)
    uniq, first = np.unique(keys, return_index=True)
    sizes = np.diff(np.append(first, keys.size))
    low = np.minimum.reduceat(points, first, axis=0)
    high = np.maximum.reduceat(points, first, axis=0) + 1
    centre = np.add.reduceat(points, first, axis=0) / sizes[:, None]
    return {int(k): (int(n), (lo, hi), c) for k, n, lo, hi, c in zip(uniq, sizes, low, high, centre)}


def find_errors(
    pred_fg: np.ndarray,
    gt_fg: np.ndarray,
    tile_counts: Sequence[np.ndarray],
    result: dict,
    dust_size: int = 500,
    tau: float = 2.0,
) -> ErrorReport:
    """The error map of one case (see the module docstring for every definition).

    ``pred_fg``/``gt_fg``: the metric's foreground masks (ignore region removed); ``tile_counts``: the 8 tiles'
    ``(3, 3)`` counts in :func:`~nnunetv2_topo.metrics.topo_score.tile_slices` order; ``result``: the case's score
    (:func:`~nnunetv2_topo.metrics.score_fields.score_result`).
    """
    pred, gt = _checked_masks(pred_fg, gt_fg, dust_size)
    m = _match_components(pred, gt, dust_size)
    codes = _error_codes(m)
    listed = _listed_errors(m)
    marked = {
        "p": _marked_stats(codes, m.lp, ("merge", "false_positive", "dust")),
        "g": _marked_stats(codes, m.lg, ("split", "missed")),
    }
    voi_bits = _voi_bits(listed, m.ci, m.cj, m.cn, m.on, m.size_p, m.on_gt, m.covered, m.n_union)
    topo = _topo_claims(listed, (pred, m.lp, m.n_p, m.stats_p), (gt, m.lg, m.n_g, m.stats_g), tile_counts, result)
    sd = _surface_claims(listed, pred, gt, m.lp, m.lg, codes, tau)
    errors = [
        _error_row(kind, comps, sheets, marked[key][label], voi_bits[e], topo["tiles"][e], sd["area"][e])
        for e, (kind, comps, sheets, key, label) in enumerate(listed)
    ]
    costs = _costs(errors, topo, sd, result)
    costs["boundary"]["voxels"] = int(np.count_nonzero(codes >= ERROR_CODES["extra"]))
    return ErrorReport(codes, errors, costs)


def _checked_masks(pred_fg: np.ndarray, gt_fg: np.ndarray, dust_size: int) -> tuple[np.ndarray, np.ndarray]:
    if dust_size < 1:
        raise ValueError(f"dust_size must be >= 1, got {dust_size}")
    pred = np.ascontiguousarray(pred_fg, dtype=bool)
    gt = np.ascontiguousarray(gt_fg, dtype=bool)
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"find_errors needs two 3-D masks of equal shape, got {pred.shape} and {gt.shape}")
    return pred, gt


@dataclass
class _Match:
    """The components of both masks, their contingency table and the components of each error kind."""

    pred: np.ndarray
    gt: np.ndarray
    lp: np.ndarray
    n_p: int
    lg: np.ndarray
    n_g: int
    n_union: int
    ci: np.ndarray
    cj: np.ndarray
    cn: np.ndarray
    on: np.ndarray
    size_p: np.ndarray
    on_gt: np.ndarray  # m_i
    covered: np.ndarray  # c_j
    stats_p: Mapping[str, Any] | None
    stats_g: Mapping[str, Any] | None
    merges: np.ndarray
    splits: np.ndarray
    missed: np.ndarray
    dust: np.ndarray
    false_pos: np.ndarray


def _match_components(pred: np.ndarray, gt: np.ndarray, dust_size: int) -> _Match:
    lp, n_p = _label(pred)
    lg, n_g = _label(gt)
    union = pred | gt
    n_union = int(np.count_nonzero(union))
    ci, cj, cn = _contingency(lp, lg, union, n_g)
    on = (ci > 0) & (cj > 0)
    size_p = np.bincount(ci, cn, minlength=n_p + 1)
    on_gt = np.bincount(ci[on], cn[on], minlength=n_p + 1)
    sheets_met = np.bincount(ci[on], minlength=n_p + 1)
    covered = np.bincount(cj[on], cn[on], minlength=n_g + 1)
    comps_met = np.bincount(cj[on], minlength=n_g + 1)
    lonely = np.flatnonzero(on_gt[1:] == 0) + 1
    return _Match(
        pred, gt, lp, n_p, lg, n_g, n_union, ci, cj, cn, on, size_p, on_gt, covered,
        stats_p=cc3d.statistics(lp) if n_p else None,
        stats_g=cc3d.statistics(lg) if n_g else None,
        merges=np.flatnonzero(sheets_met >= 2),
        splits=np.flatnonzero(comps_met >= 2),
        missed=np.flatnonzero(covered[1:] == 0) + 1,
        dust=lonely[size_p[lonely] < dust_size],
        false_pos=lonely[size_p[lonely] >= dust_size],
    )  # fmt: skip


def _error_codes(m: _Match) -> np.ndarray:
    """The error code of every voxel (``ERROR_CODES``; a later rule overwrites an earlier one)."""
    pred_only, gt_only = m.pred & ~m.gt, m.gt & ~m.pred
    codes = np.zeros(m.pred.shape, np.uint8)
    codes[pred_only] = ERROR_CODES["extra"]
    codes[gt_only] = ERROR_CODES["missing"]
    lut = np.zeros(m.n_p + 1, np.uint8)
    lut[m.false_pos], lut[m.dust] = ERROR_CODES["false_positive"], ERROR_CODES["dust"]
    mark = lut[m.lp]
    codes = np.where(mark > 0, mark, codes)
    lut = np.zeros(m.n_g + 1, np.uint8)
    lut[m.missed] = ERROR_CODES["missed"]
    mark = lut[m.lg]
    codes = np.where(mark > 0, mark, codes)
    del mark
    pieces, bridge = _bridges(pred_only, m.lp, m.n_p, m.lg, m.merges, m.stats_p)
    codes[bridge[pieces]] = ERROR_CODES["merge"]
    del pieces
    pieces, gap = _bridges(gt_only, m.lg, m.n_g, m.lp, m.splits, m.stats_g)
    codes[gap[pieces]] = ERROR_CODES["split"]
    return codes


def _listed_errors(m: _Match) -> list[tuple]:
    """The listed errors: (kind, pred components A, sheets B, marked voxels keyed by a pred (p) or gt (g) label)."""
    ci, cj, on = m.ci, m.cj, m.on
    sheets_of = {int(i): cj[on & (ci == i)] for i in m.merges}
    comps_of = {int(j): ci[on & (cj == j)] for j in m.splits}
    none = np.zeros(0, np.int64)
    listed = [("merge", np.array([i]), sheets_of[int(i)], "p", int(i)) for i in m.merges]
    listed += [("split", comps_of[int(j)], np.array([j]), "g", int(j)) for j in m.splits]
    listed += [("missed", none, np.array([j]), "g", int(j)) for j in m.missed]
    listed += [("false_positive", np.array([i]), none, "p", int(i)) for i in m.false_pos]
    listed += [("dust", np.array([i]), none, "p", int(i)) for i in m.dust]
    return listed


def _error_row(kind: str, comps, sheets, marked: tuple, bits: tuple, tiles, area) -> dict:
    voxels, (low, high), centre = marked
    return {
        "kind": kind,
        "voxels": voxels,
        "bbox": [low.tolist(), high.tolist()],
        "centroid": [round(float(c), 2) for c in centre],
        "pred_components": [int(i) for i in comps],
        "gt_sheets": [int(j) for j in sheets],
        "voi_bits": {"split": bits[0], "merge": bits[1]},
        "tiles": tiles,
        "surface_area": area,
        "cost": {},
    }


def _voi_bits(listed, ci, cj, cn, on, size_p, on_gt, covered, n_union) -> list[tuple[float, float]]:
    """``(split bits, merge bits)`` of each listed error (module docstring)."""
    out = []
    bg_gt = int(cn[(ci > 0) & (cj == 0)].sum())  # n_·0: prediction-only voxels
    bg_pred = int(cn[(ci == 0) & (cj > 0)].sum())  # n_0·: ground-truth-only voxels
    for kind, _, _, _, label in listed:
        split = merge = 0.0
        if kind == "merge":
            cells = on & (ci == label)
            merge = float(_bits(cn[cells], on_gt[label], n_union).sum())
        elif kind == "split":
            cells = on & (cj == label)
            split = float(_bits(cn[cells], covered[label], n_union).sum())
        elif kind == "missed":
            merge = float(_bits(cn[(ci == 0) & (cj == label)], bg_pred, n_union).sum())
        else:
            split = float(_bits(cn[(ci == label) & (cj == 0)], bg_gt, n_union).sum())
        out.append((split, merge))
    return out


class _TileBetti:
    """Betti numbers per component of one side (prediction or ground truth) inside one tile, computed on the crop
    to the components' bounding box (the numbers of a component do not depend on what lies outside its box), or
    once for the whole tile when the box is large."""

    def __init__(self, side: tuple, tile: tuple[slice, ...]) -> None:
        self.mask, self.lab, self.n, self.stats = side
        self.tile = tile
        self.whole: np.ndarray | None = None

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        if labels.size == 0:
            return np.zeros(3, np.int64)
        box = _box_of(self.stats, labels)
        crop = tuple(slice(max(b.start, t.start), min(b.stop, t.stop)) for b, t in zip(box, self.tile))
        size = np.prod([max(c.stop - c.start, 0) for c in crop])
        if size == 0:
            return np.zeros(3, np.int64)
        if 4 * size > np.prod([t.stop - t.start for t in self.tile]):
            if self.whole is None:
                self.whole = label_betti(self.mask[self.tile], self.lab[self.tile], self.n)
            return self.whole[labels].sum(axis=0)
        return label_betti(self.mask[crop], self.lab[crop], self.n)[labels].sum(axis=0)


def _topo_claims(listed, pred_side: tuple, gt_side: tuple, tile_counts, result) -> dict:
    """Per listed error: its tiles (the tile's unmatched pairs and those the error claims) and its claimed pairs.
    ``*_side``: ``(mask, 26-labels, label count, cc3d statistics of the labels)``."""
    slices = tile_slices(pred_side[0].shape)
    order = sorted(range(len(listed)), key=lambda e: CLAIM_ORDER.index(listed[e][0]))
    tiles: list[list[dict]] = [[] for _ in listed]
    claimed = np.zeros((len(listed), 3), np.int64)
    for t, sl in enumerate(slices):
        counts = np.asarray(tile_counts[t], np.int64)
        left_p, left_g = counts[:, 1] - counts[:, 0], counts[:, 2] - counts[:, 0]
        unmatched_p, unmatched_g = left_p.copy(), left_g.copy()
        here_p = np.bincount(pred_side[1][sl].ravel(), minlength=pred_side[2] + 1) > 0
        here_g = np.bincount(gt_side[1][sl].ravel(), minlength=gt_side[2] + 1) > 0
        betti_p, betti_g = _TileBetti(pred_side, sl), _TileBetti(gt_side, sl)
        for e in order:
            _, comps, sheets, _, _ = listed[e]
            if not (here_p[comps].any() or here_g[sheets].any()):
                continue
            take_p, take_g = np.zeros(3, np.int64), np.zeros(3, np.int64)
            if (left_p > 0).any() or (left_g > 0).any():
                delta = betti_p(comps[here_p[comps]]) - betti_g(sheets[here_g[sheets]])
                take_p = np.minimum(np.maximum(delta, 0), left_p)
                take_g = np.minimum(np.maximum(-delta, 0), left_g)
                left_p, left_g = left_p - take_p, left_g - take_g
            claimed[e] += take_p + take_g
            tiles[e].append(
                {
                    "tile": t,
                    "unmatched_pred": unmatched_p.tolist(),
                    "unmatched_gt": unmatched_g.tolist(),
                    "claimed_pred": take_p.tolist(),
                    "claimed_gt": take_g.tolist(),
                }
            )
    return {"tiles": tiles, "claimed": claimed, "feature_cost": topo_feature_costs(_counts(result))}


def _counts(result: dict) -> np.ndarray:
    return np.array([result["counts"][str(k)] for k in range(3)], np.int64)


def _surface_claims(listed, pred, gt, lp, lg, codes, tau) -> dict:
    """Per listed error: the area of the missing surface elements it owns (module docstring)."""
    misses = surface_misses(pred, gt, tau)
    index = {(key, label): e for e, (_, _, _, key, label) in enumerate(listed)}
    area = [0.0] * len(listed)
    owners = {"pred": ("p", lp, ("merge", "false_positive", "dust")), "gt": ("g", lg, ("split", "missed"))}
    flat_codes = codes.ravel()
    for side, (key, lab, kinds) in owners.items():
        corners, areas = misses[side]
        if areas.size == 0:
            continue
        wanted = np.zeros(256, bool)
        wanted[[ERROR_CODES[k] for k in kinds]] = True
        owner = np.zeros(areas.size, np.int64)
        for flat, inside in corner_blocks(corners, pred.shape):
            hit = inside & wanted[flat_codes[flat]]
            owner = np.where(hit, lab.ravel()[flat].astype(np.int64), owner)
        for label in np.unique(owner[owner > 0]):
            e = index.get((key, int(label)))
            if e is not None:
                area[e] = float(areas[owner == label].sum())
    return {"area": area, "total": misses["total"]}


def _costs(errors: list[dict], topo: dict, sd: dict, result: dict) -> dict[str, dict]:
    """Fill each error's ``cost`` and return the per-kind table with the boundary remainder."""
    voi_total = result["voi_split"] + result["voi_merge"]
    voi_lost = WEIGHTS["voi_score"] * (1.0 - result["voi_score"])
    for e, err in enumerate(errors):
        bits = err["voi_bits"]["split"] + err["voi_bits"]["merge"]
        cost = {
            "topo": WEIGHTS["topo"] * float(topo["claimed"][e] @ topo["feature_cost"]),
            "surface_dice": WEIGHTS["surface_dice"] * (err["surface_area"] / sd["total"] if sd["total"] else 0.0),
            "voi": voi_lost * bits / voi_total if voi_total > 0 else 0.0,
        }
        cost["score"] = sum(cost.values())
        err["cost"] = cost
    lost = {
        "topo": WEIGHTS["topo"] * (1.0 - result["topo"]),
        "surface_dice": WEIGHTS["surface_dice"] * (1.0 - result["surface_dice"]),
        "voi": voi_lost,
    }
    table = {k: {"count": 0, "voxels": 0, "voi_bits": 0.0, **dict.fromkeys((*PARTS, "score"), 0.0)} for k in COST_KINDS}
    for err in errors:
        row = table[err["kind"]]
        row["count"] += 1
        row["voxels"] += err["voxels"]
        row["voi_bits"] += err["voi_bits"]["split"] + err["voi_bits"]["merge"]
        for part in (*PARTS, "score"):
            row[part] += err["cost"][part]
    rest = table["boundary"]
    for part in PARTS:
        rest[part] = lost[part] - sum(table[k][part] for k in ERROR_KINDS)
    for part in PARTS:  # the remainder is >= 0; rounding leaves ~1e-17 either side
        rest[part] = 0.0 if abs(rest[part]) < 1e-12 else rest[part]
    rest["score"] = sum(rest[p] for p in PARTS)
    rest["voi_bits"] = voi_total - sum(table[k]["voi_bits"] for k in ERROR_KINDS)
    return table
