"""Kaggle-style ``id,scroll_id`` CSV files (train.csv, test.csv): reading with checks, writing.

The one reader of every command: UTF-8 with or without a byte-order mark (Excel's "CSV UTF-8"), LF or CRLF line ends,
spaces around names and values. A header that still does not fit is shown with ``repr`` so invisible characters
(a BOM in another encoding, tabs, non-breaking spaces) can be seen. Kept free of heavy imports: the converter's
worker processes load it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunetv2_topo.errors import TopoError


class KaggleCSVError(TopoError, ValueError):
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
    try:
        text = path.read_text(encoding="utf-8-sig")  # drops a leading BOM
    except UnicodeDecodeError as exc:
        raise KaggleCSVError(
            f"{path}: not UTF-8 text (byte {exc.start}: {exc.object[exc.start : exc.start + 4]!r}); save it as "
            "'CSV UTF-8' (or plain ASCII)"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    raw_fields = list(reader.fieldnames or [])
    fields = [c.strip() for c in raw_fields]
    missing = [c for c in columns if c not in fields]
    if missing:
        found = ", ".join(repr(c) for c in raw_fields) or "none"
        raise KaggleCSVError(
            f"{path}: missing column(s) {', '.join(missing)} (header read as: {found}); the first line must be a "
            f"header naming {','.join(columns)} (e.g. 'id,scroll_id'), comma-separated"
        )
    rows: list[Row] = []
    seen: set[str] = set()
    for lineno, rec in enumerate(reader, start=2):
        rec = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else "" for k, v in rec.items()}
        if not any(rec.values()):
            continue  # a blank line (spreadsheets leave them at the end)
        if any(not rec.get(c) for c in columns):
            raise KaggleCSVError(f"{path}, line {lineno}: empty {' or '.join(columns)}; fill it in or delete the line")
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
