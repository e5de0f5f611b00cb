"""``nnunetv2_topo evaluate``: the exact leaderboard metric over a folder of predictions."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nnunetv2_topo.cli.arguments import add_processes_argument, rename_flag
from nnunetv2_topo.cli.postprocess import warn_stale
from nnunetv2_topo.errors import CLIError
from nnunetv2_topo.evaluation.folder_scoring import evaluate_folders
from nnunetv2_topo.evaluation.score_table import format_table
from nnunetv2_topo.io import atomic_write_text
from nnunetv2_topo.machine import cpu_cores
from nnunetv2_topo.metrics.engine import auto_workers
from nnunetv2_topo.metrics.topo_score import COMPETITION_TILE_VOXELS, ENGINES, TILES_PER_VOLUME
from nnunetv2_topo.output_checks import check_output_folder
from nnunetv2_topo.postprocessing.steps import PostprocessConfig

__all__ = ["add_arguments", "format_table", "run", "write_json"]

HELP = "score predictions against ground truth with the exact leaderboard metric"
DESCRIPTION = """\
Score every prediction against its ground truth with the competition metric
  score = 0.30*TopoScore + 0.35*SurfaceDice@2 + 0.35*VOI_score   (per case, clipped to [0, 1]; mean over cases)
giving the same numbers as the competition's own code (label 2 in the ground truth = ignore).

Files pair by case id, the name before the first '.' (1407735.tif <-> 1407735.nii.gz); TIFF and NIfTI.
Prints one row per case and the mean; --json writes
  {"cases": {id: {score, topo, surface_dice, voi_score, voi_split, voi_merge, counts}}, "mean": {...},
   "fallback_tiles": {"total": n, "cases": {id: n}}}.

--errors DIR shows where each case loses its score: DIR/<id>.errors.tif (uint8, one code per voxel:
1 merge bridge, 2 split gap, 3 missed sheet, 4 false positive, 5 dust, 6 extra voxels, 7 missing voxels;
0 = no error, background or ignored), DIR/<id>.errors.json (every merge, split, missed sheet, false positive
and dust component with its voxels, bounding box, centroid and what it costs in VOI bits, unmatched Betti pairs
per octant tile and SurfaceDice), and DIR/summary.txt/.json (which error kind costs the most score, also
printed). The scores are the same as without --errors; the error maps cost up to about as much again.

Speed: the Betti matching of each 160^3 tile (8 per 320^3 volume) is computed by the engine's own rules for
binary tiles (--engine auto, the default: fast and light on sheet-like tiles; -np P tiles in parallel threads).
A tile whose tunnel reduction goes past a work bound falls back to the Betti-Matching-3D engine (several times
slower and with several GB per tile, in worker processes capped by free memory); the output says how many did.
--engine betti-matching-3d uses the engine for every tile. Tiles where the prediction is empty or equals the
ground truth need neither. Times and memory: see benchmarks/RESULTS.md.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, type=Path, help="folder of predicted volumes")
    rename_flag(parser, "--pred", "--input")
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth label volumes (2 = ignore)")
    parser.add_argument("--json", type=Path, default=None, help="write all scores to this JSON file")
    add_processes_argument(
        parser,
        "tiles matched in parallel (default: CPU cores; with --engine betti-matching-3d also capped by the free "
        "memory the engine needs per worker process; 0 = everything in this thread)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="how tiles are matched: auto = the exact rules, the Betti-Matching-3D engine for tiles past their work "
        "bound; rules = the rules without a bound; betti-matching-3d = the engine for every tile (default %(default)s)",
    )
    parser.add_argument(
        "--only-predicted",
        action="store_true",
        help="skip ground truth without a prediction instead of refusing (e.g. nnU-Net's gt_segmentations, which "
        "holds every case, against one fold's validation predictions)",
    )
    parser.add_argument(
        "--errors",
        type=Path,
        default=None,
        metavar="DIR",
        help="write per case an error volume <id>.errors.tif and an error list <id>.errors.json into DIR, and a "
        "summary of the score lost per error kind (printed, and DIR/summary.txt/.json)",
    )
    parser.add_argument(
        "--dust-size",
        type=int,
        default=None,
        metavar="N",
        help="with --errors: a predicted component meeting no ground-truth sheet is dust below N voxels, a false "
        f"positive from N (default: the post-processing's dust size, {PostprocessConfig().min_component_size})",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --errors folder, replacing files of the same name",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar and no per-case table")


def _default_processes(engine: str) -> int:
    if engine == "betti-matching-3d":
        return auto_workers(n_tasks=TILES_PER_VOLUME, tile_voxels=COMPETITION_TILE_VOXELS)
    return max(1, min(TILES_PER_VOLUME, cpu_cores()))


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` as JSON via a temporary file and rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def run(args: argparse.Namespace) -> int:
    processes = _default_processes(args.engine) if args.num_processes is None else args.num_processes
    if processes < 0:
        raise CLIError(f"-np must be 0 or more, got {processes}")
    if args.json is not None and args.json.is_dir():
        raise CLIError(f"--json {args.json} is a directory; give a file name such as scores.json")
    writer = _error_writer(args)
    result = evaluate_folders(
        args.input,
        args.gt,
        num_processes=processes,
        progress=not args.quiet,
        only_predicted=args.only_predicted,
        engine=args.engine,
        diagnose=writer,
    )
    if not args.quiet:
        print(format_table(result))
    else:
        print(f"mean score {result['mean']['score']:.4f} over {len(result['cases'])} case(s)")
    if args.engine == "auto":
        print(f"{result['fallback_tiles']['total']} tile(s) fell back to the Betti-Matching-3D engine")
    if args.json is not None:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    if writer is not None:
        _finish_errors(writer)
    return 0


def _error_writer(args: argparse.Namespace):
    """The error-map writer of ``--errors`` (its folder checked before any work), or ``None``."""
    if args.errors is None:
        if args.dust_size is not None:
            raise CLIError("--dust-size needs --errors DIR (it sets what the error maps call dust)")
        return None
    from nnunetv2_topo.evaluation.error_maps import ErrorMapWriter

    dust = PostprocessConfig().min_component_size if args.dust_size is None else args.dust_size
    if dust < 1:
        raise CLIError(f"--dust-size must be 1 or more voxels, got {dust}")
    for flag, folder in (("--input", args.input), ("--gt", args.gt)):
        if folder.exists() and args.errors.resolve() == folder.resolve():
            raise CLIError(f"--errors {args.errors} is the {flag} folder; give a folder of its own")
    check_output_folder(args.errors, args.overwrite, "--errors")
    return ErrorMapWriter(args.errors, dust)


def _finish_errors(writer) -> None:
    from nnunetv2_topo.evaluation.error_maps import format_error_summary

    print(format_error_summary(writer.write_summary()))
    print(f"wrote the error maps of {len(writer.costs)} case(s) to {writer.folder}")
    warn_stale(writer.folder, writer.written)
