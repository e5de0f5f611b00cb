"""``nnunetv2_topo finalize OUT.zarr``: complete a whole-volume output whose chunks are all predicted (global
post-processing, pyramids, OME-Zarr metadata, clean-up) without predicting. See docs/how-to/whole-volume.md."""

from __future__ import annotations

import argparse

from nnunetv2_topo.cli.arguments import rename_flag
from nnunetv2_topo.cli.predict_scroll import missing_volume_packages
from nnunetv2_topo.errors import CLIError

HELP = "complete a whole-volume OUT.zarr whose parts are all predicted (post-processing, pyramid, metadata)"
DESCRIPTION = f"""{HELP}.

'predict --num-parts N' completes the volume in the part that finishes last; run this when that part was killed,
or to finish on another machine. Exactly one process finalizes (a lock object in OUT.zarr; a lock without a
heartbeat for NNUNETV2_TOPO_LOCK_STALE_S seconds, default 300, is taken over); a kill at any point followed by
another run gives the same result. Safe to run any number of times. Exit status 0 when the volume is complete
(or another process is finalizing it), 1 when chunks are still missing (it says how many).

Example:
  nnunetv2_topo finalize /scratch/scroll_pred.zarr --dask local:4
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", help="the OUT.zarr of 'nnunetv2_topo predict' (local path or fsspec URL)")
    parser.add_argument("--dask", help="local:N (a LocalCluster of N workers) or tcp://HOST:PORT; default: threads")
    parser.add_argument(
        "--wait-seconds",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds to wait for another process's lock (default %(default)s: leave it)",
    )
    rename_flag(parser, "--wait", "--wait-seconds")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    missing = missing_volume_packages()
    if missing:
        raise CLIError(
            f"finalize needs {', '.join(missing)}, which is not installed: pip install 'nnunetv2-topo[volume]'"
        )
    if args.wait_seconds < 0:
        raise CLIError(f"--wait-seconds must be >= 0, got {args.wait_seconds}")
    from nnunetv2_topo.scroll import close_client, parse_dask, start_client
    from nnunetv2_topo.scroll.finalize import finalize_volume

    url = str(args.output)
    client = None
    try:
        if args.dask is not None:
            client = start_client(parse_dask(args.dask))
        report = finalize_volume(url, client, progress=not args.quiet, wait_s=args.wait_seconds)
    finally:
        if client is not None:
            close_client(client, args.dask)
    print(report.line(url))
    return 0 if report.complete or report.busy else 1
