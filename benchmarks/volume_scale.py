"""Whole-volume ``predict`` on a volume whose tile grid is many times the tile cache: how often each tile is
predicted and each input byte read, stage by stage, and a worker's memory (issue 25, "compute about once").

One untrained model (cost does not depend on the weights; patch P, stride P/2 as nnU-Net's step 0.5), a synthetic
uint8 volume stored in chunks of ``--input-chunk``, predicted with ``--chunk`` and ``--tile-cache-mb`` chosen so that
the grid's tiles need ``--ratio``x the cache or more. Rows, side by side in one run:

  scaled cache          predict_scroll in this process with the small tile cache (the issue's target: <= 1.25 tiles
                        predicted per grid tile, <= 1.5x bytes read per input byte)
  ample caches          the same with the default caches (2048 MiB of tiles, 1024 MiB of input: all fits, one
                        work unit): the labels must be equal
  Dask 1 worker         (--worker) the small cache on a 1-worker LocalCluster: the worker's peak RSS

Run it against another checkout (e.g. main) with PYTHONPATH=that/checkout to compare; fields a checkout does not
report are printed as '-'.

    python benchmarks/volume_scale.py                        # CPU: 64 x 256 x 256, patch 16, chunk 16, cache 8 MiB
    python benchmarks/volume_scale.py --device cuda --shape 512 1024 1024 --patch 128 --chunk 128 --input-chunk 128 \\
        --default-network --tile-cache-mb 2048 --deterministic
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from volume_predict import _volume  # noqa: E402  (the same smooth synthetic volume)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", type=int, nargs=3, default=(64, 256, 256))
    ap.add_argument("--patch", type=int, default=16)
    ap.add_argument("--features", type=int, nargs="+", default=(4, 8, 16))
    ap.add_argument("--default-network", action="store_true", help="nnU-Net's 3d_fullres features (32..320)")
    ap.add_argument("--chunk", type=int, default=16, help="output chunk edge (--chunk)")
    ap.add_argument("--input-chunk", type=int, default=16, help="stored chunk edge of the input volume")
    ap.add_argument("--tile-cache-mb", type=int, default=8)
    ap.add_argument("--cache-mb", type=int, default=64, help="input-chunk cache (--cache-mb)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--no-ample", action="store_true", help="skip the ample-cache row (and the equality check)")
    ap.add_argument("--worker", action="store_true", help="also a 1-worker Dask row (its peak RSS)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)

    import torch
    import zarr

    from nnunetv2_topo.inference.models import check_model_folders, use_topo_trainers
    from nnunetv2_topo.inference.predict import load_models
    from nnunetv2_topo.scroll import ScrollOptions, open_source, parse_dask, predict_scroll, start_client
    from nnunetv2_topo.testing.untrained import write_untrained_model_folder

    try:
        from nnunetv2_topo.scroll.cluster import peak_rss_mb
    except ImportError:  # an older checkout

        def peak_rss_mb() -> float:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    work = Path(tempfile.mkdtemp(prefix="volume_scale_"))
    features = (32, 64, 128, 256, 320, 320) if args.default_network else tuple(args.features)
    model = write_untrained_model_folder(work / "results", patch=(args.patch,) * 3, features=features)
    use_topo_trainers()
    folders = check_model_folders([model], None, "checkpoint_final.pth")
    device = torch.device(args.device)
    shape = tuple(args.shape)
    url = str(work / "in.zarr")
    arr = zarr.create_array(url, shape=shape, chunks=(args.input_chunk,) * 3, dtype="uint8")
    for z in range(0, shape[0], 256):
        arr[z : z + 256] = _volume((min(256, shape[0] - z), *shape[1:]), seed=z)
    steps = [len(range(0, max(s - args.patch, 0) + 1, args.patch // 2)) for s in shape]  # about nnU-Net's grid
    tile_mb = 2 * args.patch**3 * (2 if args.device == "cuda" else 4) / 2**20
    print(
        f"volume {shape} uint8 in {args.input_chunk}^3 chunks, patch {args.patch}, chunk {args.chunk}, device "
        f"{args.device}; about {math.prod(steps)} grid tiles of {tile_mb:.3f} MiB = {math.prod(steps) * tile_mb:.0f} "
        f"MiB, tile cache {args.tile_cache_mb} MiB ({math.prod(steps) * tile_mb / args.tile_cache_mb:.1f}x)"
    )

    def row(name, tile_cache_mb, client=None, cache_mb=None):
        loaded = load_models(folders, [1.0], device if client is None else torch.device("cpu"), progress=False)
        out = str(work / f"{name.replace(' ', '_')}.zarr")
        options = ScrollOptions(
            folders, [1.0], device.type, "none", "logit", None, out, args.chunk, progress=False,
            tile_cache_mb=tile_cache_mb, cache_mb=cache_mb or args.cache_mb, deterministic=args.deterministic,
        )  # fmt: skip
        t0, c0 = time.perf_counter(), time.process_time()
        report = predict_scroll(open_source(url), loaded, options, client=client)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stages = getattr(report, "stages", {})
        return {
            "name": name,
            "wall_s": wall,
            "cpu_s": cpu if client is None else None,
            "tiles_predicted": int(report.total("tiles_predicted")),
            "grid_tiles": report.grid_tiles,
            "tiles_per_grid_tile": report.total("tiles_predicted") / report.grid_tiles,
            "read_amplification": report.total("bytes_read") / math.prod(shape),
            "scan_s": stages.get("scan"),
            "predict_s": stages.get("predict"),
            "finalize_s": stages.get("finalize"),
            "work_unit_chunks": list(getattr(report, "block", ())),
            "peak_rss_mb": max(s["peak_rss_mb"] for s in report.stats),
            "output": out,
        }

    rows = [row("scaled cache", args.tile_cache_mb)]
    rows[0]["peak_rss_mb"] = peak_rss_mb()  # this process, so far
    if not args.no_ample:
        rows.append(row("ample caches", 2048, cache_mb=1024))
        a, b = (zarr.open_group(r["output"], mode="r")["0"][:] for r in rows[:2])
        rows[0]["labels_differing_from_ample"] = int(np.count_nonzero(a != b))
    if args.worker:
        client = start_client(parse_dask("local:1"))
        try:
            rows.append(row("Dask 1 worker", args.tile_cache_mb, client))
        finally:
            cluster = client.cluster
            client.close()
            cluster.close()

    def show(v, fmt):
        return "-" if v is None else format(v, fmt)

    print(
        f"{'row':14s} {'wall s':>7s} {'CPU s':>7s} {'tiles/grid':>10s} {'tiles':>13s} {'read amp':>8s} "
        f"{'scan s':>6s} {'pred s':>7s} {'fin s':>6s} {'unit':>9s} {'peak MB':>8s} {'differ':>6s}"
    )
    for r in rows:
        print(
            f"{r['name']:14s} {r['wall_s']:7.1f} {show(r['cpu_s'], '7.1f')} {r['tiles_per_grid_tile']:10.3f} "
            f"{r['tiles_predicted']:>6d}/{r['grid_tiles']:<6d} {r['read_amplification']:8.3f} "
            f"{show(r['scan_s'], '6.1f')} {show(r['predict_s'], '7.1f')} {show(r['finalize_s'], '6.1f')} "
            f"{'x'.join(map(str, r['work_unit_chunks'])) or '-':>9s} {r['peak_rss_mb']:8.0f} "
            f"{r.get('labels_differing_from_ample', ''):>6}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
