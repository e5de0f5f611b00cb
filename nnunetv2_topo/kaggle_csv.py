"""Kaggle-style ``id,scroll_id`` CSV files (train.csv, test.csv): reading with checks, writing.

Kept free of heavy imports: the converter's worker processes load it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class KaggleCSVError(ValueError):
    """A CSV that is not a usable Kaggle ids file; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Row:
    id: str
    scroll_id: str


def read_ids_csv(path: str | os.PathLike, columns: Sequence[str] = ("id", "scroll_id")) -> list[Row]:
    """Rows of a Kaggle-style ``id,scroll_id`` CSV, checked for the required ``columns``, empty and duplicate ids
    (``columns=("id",)`` for a file whose scroll ids are not needed: ``scroll_id`` is then ``""`` where absent)."""
    path = Path(path)
    if not path.is_file():
        raise KaggleCSVError(f"{path}: no such CSV file; pass a Kaggle train.csv with columns id,scroll_id")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in columns if c not in fields]
        if missing:
            raise KaggleCSVError(
                f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(fields) or 'none'}); "
                f"the first line must be a header naming {','.join(columns)} (e.g. 'id,scroll_id')"
            )
        rows: list[Row] = []
        seen: set[str] = set()
        for lineno, rec in enumerate(reader, start=2):
            rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
            if any(not rec.get(c) for c in columns):
                raise KaggleCSVError(
                    f"{path}, line {lineno}: empty {' or '.join(columns)}; fill it in or delete the line"
                )
            if rec["id"] in seen:
                raise KaggleCSVError(f"{path}, line {lineno}: duplicate id {rec['id']}; ids must be unique")
            seen.add(rec["id"])
            rows.append(Row(rec["id"], rec.get("scroll_id", "")))
    return rows


def write_ids_csv(path: str | os.PathLike, rows: Sequence[Row]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "scroll_id"])
        for r in rows:
            w.writerow([r.id, r.scroll_id])
