"""The cases of a ``predict`` run: the input folder's volumes, their split into parts, and merging the parts.

Input layouts: Kaggle's ``test_images/<id>.tif`` or nnU-Net's ``imagesTs/<id>_0000.tif`` (one channel). An optional
``<id>.json`` spacing sidecar (nnU-Net's ``Tiff3DIO`` convention) is honoured; without one the spacing is 1.
Parts split the sorted case list exactly as ``nnUNetv2_predict -num_parts N -part_id K`` does (``ids[K::N]``); each
part folder records its split in :data:`PART_MANIFEST` so that :func:`merge_parts` can tell a missing case from a
doubled one.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.io import TIFF_SUFFIXES, VolumeError, atomic_write_text, read_volume

PART_MANIFEST = "predict_part.json"
_CHANNEL = re.compile(r"^(?P<id>.+)_(?P<channel>\d{4})$")


class CaseError(TopoError, ValueError):
    """The input/part folders cannot be used as given; the message names the folder/file and the fix."""


@dataclass(frozen=True)
class InputCase:
    id: str
    image: Path

    def read(self) -> tuple[np.ndarray, tuple[float, float, float]]:
        """The image as float32 (Z, Y, X) and its spacing (from ``<id>.json`` beside it, else 1, 1, 1)."""
        try:
            image = read_volume(self.image).astype(np.float32)
        except VolumeError as exc:
            raise CaseError(f"case {self.id}: {exc}") from exc
        sidecar = self.image.with_name(f"{self.id}.json")
        if not sidecar.is_file():
            return image, (1.0, 1.0, 1.0)
        try:
            spacing = tuple(float(s) for s in json.loads(sidecar.read_text())["spacing"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CaseError(f'{sidecar}: not a spacing sidecar ({exc}); expected {{"spacing": [1, 1, 1]}}') from None
        if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
            raise CaseError(f"{sidecar}: 'spacing' must be 3 positive numbers, got {list(spacing)}")
        return image, spacing


def index_input_images(folder: str | os.PathLike) -> list[InputCase]:
    """The cases of an input folder, sorted by id (Kaggle ``<id>.tif`` or nnU-Net ``<id>_0000.tif``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CaseError(f"input folder {folder} does not exist; pass Kaggle's test_images/ or nnU-Net's imagesTs/")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(TIFF_SUFFIXES))
    files = [p for p in files if not p.name.startswith(".")]
    if not files:
        raise CaseError(f"input folder {folder} holds no .tif/.tiff volumes; pass a folder of test images")
    stems = {p: p.name[: p.name.lower().rfind(".ti")] for p in files}
    channels = {p: _CHANNEL.match(s) for p, s in stems.items()}
    nnunet = [p for p, m in channels.items() if m]
    if nnunet and len(nnunet) != len(files):
        plain = [p.name for p, m in channels.items() if not m]
        raise CaseError(
            f"input folder {folder} mixes nnU-Net names (<id>_0000.tif) with Kaggle names ({', '.join(plain[:3])}); "
            "use one layout"
        )
    cases: dict[str, InputCase] = {}
    for p in files:
        m = channels[p]
        if m and m["channel"] != "0000":
            raise CaseError(
                f"{p}: channel {m['channel']}; predict takes single-channel CT volumes (<id>_0000.tif only)"
            )
        cid = m["id"] if m else stems[p]
        if cid in cases:
            raise CaseError(f"input folder {folder} holds two volumes for case {cid}; keep one")
        cases[cid] = InputCase(cid, p)
    return [cases[c] for c in sorted(cases)]


def check_part(num_parts: int, part_id: int) -> None:
    if num_parts < 1:
        raise CaseError(f"--num-parts must be >= 1, got {num_parts}")
    if not 0 <= part_id < num_parts:
        raise CaseError(f"--part-id must lie in 0..{num_parts - 1} for --num-parts {num_parts}, got {part_id}")


def split_part(cases: Sequence[InputCase], num_parts: int, part_id: int) -> list[InputCase]:
    """The cases of part ``part_id`` of ``num_parts``: ``cases[part_id::num_parts]``, as nnU-Net splits them."""
    check_part(num_parts, part_id)
    return list(cases[part_id::num_parts])


def write_part_manifest(folder: Path, all_ids: Sequence[str], num_parts: int, part_id: int) -> None:
    manifest = {"num_parts": num_parts, "part_id": part_id, "all_cases": list(all_ids)}
    manifest["cases"] = list(all_ids[part_id::num_parts])
    atomic_write_text(folder / PART_MANIFEST, json.dumps(manifest, indent=1))


def merged_part_files(part_dirs: Sequence[str | os.PathLike]) -> dict[str, Path]:
    """case id -> ``<id>.tif`` over all part folders, checked against their manifests: every case of the run is
    present exactly once (a missing or doubled id, parts of different runs, or a missing part -> :class:`CaseError`)."""
    found: dict[str, Path] = {}
    all_cases: list[str] | None = None
    seen_parts: dict[int, Path] = {}
    num_parts = None
    for d in map(Path, part_dirs):
        manifest_file = d / PART_MANIFEST
        if not manifest_file.is_file():
            raise CaseError(f"{d} is not a predict part folder (no {PART_MANIFEST}); pass the --output folders of "
                            "'nnunetv2_topo predict --num-parts N --part-id K'")  # fmt: skip
        try:
            manifest = json.loads(manifest_file.read_text())
            part_all, part_id, n = list(manifest["all_cases"]), int(manifest["part_id"]), int(manifest["num_parts"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CaseError(f"{manifest_file}: unreadable part manifest ({exc}); predict that part again") from None
        if all_cases is None:
            all_cases, num_parts = part_all, n
        elif part_all != all_cases or n != num_parts:
            raise CaseError(f"{d} belongs to another run (different cases or --num-parts) than {part_dirs[0]}")
        if part_id in seen_parts:
            raise CaseError(f"part {part_id} given twice: {seen_parts[part_id]} and {d}")
        seen_parts[part_id] = d
        for p in sorted(d.glob("*.tif")):
            cid = p.name[: -len(".tif")]
            if cid in found:
                raise CaseError(f"case {cid} is predicted twice: {found[cid]} and {p}; keep one")
            found[cid] = p
    assert all_cases is not None and num_parts is not None
    missing_parts = sorted(set(range(num_parts)) - set(seen_parts))
    missing = [c for c in all_cases if c not in found]
    if missing:
        hint = f" (part(s) {', '.join(map(str, missing_parts))} not given)" if missing_parts else ""
        raise CaseError(
            f"{len(missing)} case(s) have no prediction in the part folders{hint}: {', '.join(missing[:10])}"
        )
    extra = sorted(set(found) - set(all_cases))
    if extra:
        raise CaseError(f"prediction(s) for case(s) outside the run's input: {', '.join(extra[:10])}; remove them")
    return {c: found[c] for c in all_cases}


def iter_part_volumes(files: dict[str, Path]) -> Iterator[tuple[str, np.ndarray]]:
    for cid, path in files.items():
        try:
            yield cid, read_volume(path)
        except VolumeError as exc:
            raise CaseError(f"case {cid}: {exc}") from exc
