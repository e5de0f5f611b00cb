"""One output chunk of one model: the plans' normalisation, the global grid's tiles around the chunk, blended exactly
as ``nnUNetPredictor`` blends a whole case (its Gaussian, its half-precision accumulators, its tile order, the folds'
mean, its mirroring), reduced to the binary logit ``l1 - l0`` in the image frame; several models fused with
:class:`~nnunetv2_topo.postprocessing.fusion.Fusion`.

Normalisation: per-voxel schemes (``CTNormalization`` with the dataset's statistics from the plans, ``NoNormalization``,
``RGBTo0_1Normalization``) run nnU-Net's own class on each region: exact. ``ZScoreNormalization`` uses statistics of
the whole (cropped) volume, computed once before prediction (float64 sums; nnU-Net sums in float32) and applied
with nnU-Net's formula; with ``use_mask_for_norm`` (statistics over the hole-filled nonzero mask) it is refused.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from nnunetv2_topo.errors import TopoError
from nnunetv2_topo.inference.predict import LoadedModel
from nnunetv2_topo.postprocessing.fusion import LOGIT_CLAMP, Fusion
from nnunetv2_topo.scroll.grid import Box, Geometry

if TYPE_CHECKING:
    import torch

PER_VOXEL_SCHEMES = ("CTNormalization", "NoNormalization", "RGBTo0_1Normalization")


class ScrollModelError(TopoError, ValueError):
    """A model whose plans the volume path cannot reproduce exactly; the message names it and why."""


def normalization_of(model: LoadedModel) -> tuple[str, bool]:
    cm = model.predictor.configuration_manager
    scheme, use_mask = cm.normalization_schemes[0], bool(cm.use_mask_for_norm[0])
    if scheme in PER_VOXEL_SCHEMES:
        return scheme, use_mask
    if scheme == "ZScoreNormalization" and not use_mask:
        return scheme, use_mask
    raise ScrollModelError(
        f"{model.folder.path}: normalization {scheme} (use_mask_for_norm={use_mask}) depends on the whole case in a "
        "way chunked prediction cannot reproduce; supported: CTNormalization, NoNormalization, RGBTo0_1Normalization, "
        "ZScoreNormalization without use_mask_for_norm"
    )


def check_spacing(model: LoadedModel, spacing: Sequence[float]) -> None:
    """Refuse a volume whose spacing differs from the plans' (nnU-Net would resample; the volume path does not)."""
    p = model.predictor
    target = list(p.configuration_manager.spacing)
    spacing_t = [float(spacing[i]) for i in p.plans_manager.transpose_forward]
    if not np.allclose(spacing_t, target, rtol=1e-6):
        raise ScrollModelError(
            f"{model.folder.path}: the model's plans expect spacing {target}, the volume has {spacing_t} "
            "(transposed as the plans do); resampling is not supported for volumes: choose the --level whose "
            "spacing matches, or resample the volume first"
        )


class TileCache:
    """Tile predictions (Gaussian-weighted, per fold and mirroring), bounded in bytes; counts predictions.

    :meth:`expect` tells it how many chunks of the current work unit still need each tile: a tile is kept from its
    prediction until the last of those chunks is blended (:meth:`release`), and not kept at all when only the chunk
    that made it needs it. Work units are sized so that the tiles kept at once fit
    (:func:`~nnunetv2_topo.scroll.grid.plan_block`); past ``max_bytes`` a new tile is not kept (within a unit) or the
    least recently used one is dropped (without :meth:`expect`), and predicted again when needed: exact, slower."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()
        self._held = 0
        self._uses: dict = {}  # tile corner -> chunks of this unit that still need it
        self._keys_of: dict = {}  # tile corner -> its cache keys (one per fold and mirroring)
        self.predicted = 0
        self.reused = 0

    def expect(self, uses: dict) -> None:
        """Start a work unit: ``uses`` = tile corner -> how many of its chunks need the tile."""
        self.clear()
        self._uses = dict(uses)

    def get(self, key: tuple) -> torch.Tensor | None:
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.reused += 1
        return item

    def put(self, key, value) -> None:
        self.predicted += 1
        size = value.element_size() * value.nelement()
        if size > self.max_bytes or (self._uses and self._uses.get(key[-1], 0) <= 1):
            return  # too large, or no later chunk of this unit needs it
        if self._uses and self._held + size > self.max_bytes:
            return  # full within a unit: keep the tiles held (evicting them would cascade), predict this one again
        self._items[key] = value
        self._keys_of.setdefault(key[-1], []).append(key)
        self._held += size
        while self._held > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self._held -= old.element_size() * old.nelement()

    def release(self, tiles) -> None:
        """A chunk that used ``tiles`` is done: drop the tiles no later chunk of the unit needs."""
        if not self._uses:
            return
        for t in tiles:
            left = self._uses.get(t, 0) - 1
            self._uses[t] = left
            if left == 0:
                for key in self._keys_of.pop(t, ()):
                    item = self._items.pop(key, None)
                    if item is not None:
                        self._held -= item.element_size() * item.nelement()

    def clear(self) -> None:
        self._items.clear()
        self._keys_of.clear()
        self._held = 0
        self._uses = {}


class ChunkModel:
    """A loaded model that predicts the binary logit of one output chunk (see the module doc)."""

    def __init__(self, model: LoadedModel, zscore: tuple[float, float] | None = None) -> None:
        self.model = model
        p = model.predictor
        self.patch = tuple(int(s) for s in p.configuration_manager.patch_size)
        self.transpose = tuple(int(a) for a in p.plans_manager.transpose_forward)
        self.transpose_back = tuple(int(a) for a in p.plans_manager.transpose_backward)
        self.scheme, use_mask = normalization_of(model)
        self.zscore = zscore
        if self.scheme == "ZScoreNormalization":
            if zscore is None:
                raise ValueError("ZScoreNormalization needs the volume's (mean, std)")
        else:
            from nnunetv2.preprocessing.normalization import default_normalization_schemes as schemes

            props = p.plans_manager.foreground_intensity_properties_per_channel.get("0", {})
            self.normalizer = getattr(schemes, self.scheme)(use_mask_for_norm=use_mask, intensityproperties=props)
        self._gaussian: torch.Tensor | None = None
        self.tile_cache = TileCache(0)

    def geometry(self, shape: Sequence[int], crop: Box) -> Geometry:
        return Geometry(tuple(shape), crop, self.transpose, self.patch, 0.5)

    def normalize(self, image: np.ndarray) -> np.ndarray:
        if self.scheme == "ZScoreNormalization":
            assert self.zscore is not None  # __init__ refuses ZScoreNormalization without it
            mean, std = self.zscore
            image = image.astype(np.float32, copy=False)
            image -= np.float32(mean)
            image /= np.float32(max(std, 1e-8))
            return image
        return self.normalizer.run(image, None)

    def _blend(self, data, tiles: Sequence[tuple[int, ...]], region: Box, mirror: bool):
        """nnU-Net's ``predict_logits_from_preprocessed_data`` restricted to ``tiles`` over ``region``; each tile's
        Gaussian-weighted prediction is taken from ``self.tile_cache`` when a neighbouring chunk already made it."""
        import torch
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian
        from torch._dynamo import OptimizedModule

        p = self.model.predictor
        p.use_mirroring = mirror
        device = p.device
        on_device = p.perform_everything_on_device and device.type == "cuda"
        results_device = device if on_device else torch.device("cpu")
        gaussian = self._gaussian
        if gaussian is None:
            gaussian = self._gaussian = compute_gaussian(
                self.patch, sigma_scale=1.0 / 8, value_scaling_factor=10, device=results_device
            )
        heads = p.label_manager.num_segmentation_heads
        shape = tuple(hi - lo for lo, hi in region)
        total = None
        net = p.network._orig_mod if isinstance(p.network, OptimizedModule) else p.network
        autocast = torch.autocast(device.type, enabled=True) if device.type == "cuda" else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            for fold, params in enumerate(p.list_of_parameters):
                loaded = False
                logits = torch.zeros((heads, *shape), dtype=torch.half, device=results_device)
                n = torch.zeros(shape, dtype=torch.half, device=results_device)
                for t in tiles:
                    sl = tuple(slice(t[d] - region[d][0], t[d] - region[d][0] + self.patch[d]) for d in range(3))
                    key = (fold, mirror, t)
                    prediction = self.tile_cache.get(key)
                    if prediction is None:
                        if not loaded:
                            net.load_state_dict(params)
                            p.network = p.network.to(device)
                            p.network.eval()
                            loaded = True
                        workon = torch.clone(data[(slice(None),) + sl][None], memory_format=torch.contiguous_format)
                        prediction = p._internal_maybe_mirror_and_predict(workon.to(device))[0].to(results_device)
                        prediction *= gaussian
                        self.tile_cache.put(key, prediction)
                    logits[(slice(None),) + sl] += prediction
                    n[sl] += gaussian
                torch.div(logits, n, out=logits)
                logits = logits.to("cpu")
                total = logits if total is None else total.add_(logits)
            if len(p.list_of_parameters) > 1:
                assert total is not None  # one fold at least
                total /= len(p.list_of_parameters)
        self.tile_cache.release(tiles)
        return total

    def read_region(self, geometry: Geometry, box: Box, reader):
        """(tiles, t region, t box, normalised region as float32 (t frame) or None when its image is all zero);
        None when ``box`` lies outside the crop."""
        t_box = geometry.t_box(box)
        if t_box is None:
            return None
        tiles = geometry.tiles(t_box)
        region = geometry.region(tiles)
        img_box, within = geometry.image_source(region)
        image = reader.read(img_box)
        if not image.any():
            return tiles, region, t_box, None
        data = np.zeros(tuple(hi - lo for lo, hi in region), np.float32)
        data[tuple(slice(lo, hi) for lo, hi in within)] = self.normalize(image).transpose(self.transpose)
        return tiles, region, t_box, data

    def binary_logit(self, geometry: Geometry, box: Box, prepared, mirror: bool) -> np.ndarray:
        """float32 ``l1 - l0`` over the image-frame ``box`` (``-LOGIT_CLAMP`` outside the crop, as ``predict``)."""
        import torch

        out = np.full(tuple(hi - lo for lo, hi in box), -LOGIT_CLAMP, np.float32)
        if prepared is None:
            return out
        tiles, region, t_box, data = prepared
        logits = self._blend(torch.from_numpy(data)[None], tiles, region, mirror)
        sl = tuple(slice(lo - r[0], hi - r[0]) for (lo, hi), r in zip(t_box, region, strict=True))
        part = logits[(slice(None),) + sl].numpy()
        binary = np.subtract(part[1], part[0], dtype=np.float32).transpose(self.transpose_back)
        inner = tuple(
            slice(max(lo, clo) - lo, min(hi, chi) - lo) for (lo, hi), (clo, chi) in zip(box, geometry.crop, strict=True)
        )
        out[inner] = binary
        return out


def fused_chunk_probability(
    models: Sequence[ChunkModel],
    geometries: Sequence[Geometry],
    box: Box,
    reader,
    tta: str,
    mode: str,
    skip_empty: bool = True,
) -> np.ndarray | None:
    """The fused foreground probability (float32) of one chunk; None when ``skip_empty`` and every model's region of
    the input is all zero (the chunk is then background without running a network)."""
    prepared = [m.read_region(g, box, reader) for m, g in zip(models, geometries, strict=True)]
    if skip_empty and all(p is None or p[3] is None for p in prepared):
        for m, prep in zip(models, prepared, strict=True):
            if prep is not None:
                m.tile_cache.release(prep[0])
        return None
    fusion = Fusion(mode)
    for m, g, prep in zip(models, geometries, prepared, strict=True):
        if prep is not None and prep[3] is None:  # empty region, not skipped: predict it like nnU-Net would
            tiles, region, t_box, _ = prep
            data = np.zeros(tuple(hi - lo for lo, hi in region), np.float32)
            img_box, within = g.image_source(region)
            zeros = np.zeros(tuple(hi - lo for lo, hi in img_box), np.float32)
            data[tuple(slice(lo, hi) for lo, hi in within)] = m.normalize(zeros).transpose(m.transpose)
            prep = (tiles, region, t_box, data)
        fusion.add_logit(m.binary_logit(g, box, prep, tta != "none"), m.model.weight)
    return fusion.probability()
