"""Kaggle-style ``id,scroll_id`` CSV files (train.csv, test.csv): reading with checks, writing.

Kept free of heavy imports: the converter's worker processes load it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class SynthError(ValueError):
    """Bad synthesis request (output folder, ids CSV, sizes); the message names what and the fix."""


@dataclass(frozen=True)
class Row:
    id: str
    scroll_id: str


def read_ids_csv(path: str | os.PathLike) -> list[Row]:
    """Rows of a Kaggle-style ``id,scroll_id`` CSV, checked for the columns, empty and duplicate ids."""
    path = Path(path)
    if not path.is_file():
        raise SynthError(f"{path}: no such CSV file; pass a Kaggle train.csv with columns id,scroll_id")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        fields = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in ("id", "scroll_id") if c not in fields]
        if missing:
            raise SynthError(
                f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(fields) or 'none'}); "
                "the first line must be the header 'id,scroll_id'"
            )
        rows: list[Row] = []
        seen: set[str] = set()
        for lineno, rec in enumerate(reader, start=2):
            rec = {(k or "").strip(): (v or "").strip() for k, v in rec.items()}
            if not rec["id"] or not rec["scroll_id"]:
                raise SynthError(f"{path}, line {lineno}: empty id or scroll_id; fill it in or delete the line")
            if rec["id"] in seen:
                raise SynthError(f"{path}, line {lineno}: duplicate id {rec['id']}; ids must be unique")
            seen.add(rec["id"])
            rows.append(Row(rec["id"], rec["scroll_id"]))
    return rows


def write_ids_csv(path: str | os.PathLike, rows: Sequence[Row]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "scroll_id"])
        for r in rows:
            w.writerow([r.id, r.scroll_id])
