"""Simulated per-epoch validation losses of long nnU-Net runs, to judge plateau settings before spending GPU days.

A family is a trend plus noise. nnU-Net's per-epoch ``val_loss`` is the mean over 50 batches of random patches (many
mostly ignore label), so it scatters by ±0.01–0.03 around a trend that late in a 1,000-epoch run improves by ~1e-4
per epoch (``docs/explanation/lr-schedule.md`` says which logs the noise was estimated from). The loss is negative
(nnU-Net's Dice term is ``-Dice``), as in real logs.

* ``improving``: ``level + amplitude * exp(-epoch / tau)``, a trend that still improves at the end of the run: a
  schedule should keep the LR high (target: >= 60 % of the epochs at >= 10 % of the base LR).
* ``plateau``: improves (quadratically slower) until ``plateau_start``, flat afterwards: a schedule should cut
  (target: >= 2 cuts within 200 epochs of ``plateau_start``).

Noise: Gaussian (sd ``noise``) or Student-t with 3 degrees of freedom scaled to the same sd, optionally AR(1)
correlated (``ar``), plus rare upward spikes (probability ``spike_rate`` per epoch, size ``spike_size`` x U(0.5, 1.5)).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Family", "DEVELOPMENT_FAMILIES", "HELD_OUT_FAMILIES", "simulate"]


@dataclass(frozen=True)
class Family:
    """One simulated log family (a trend, a noise model and a seed)."""

    name: str
    kind: str  # "improving" | "plateau"
    tau: float = 250.0
    plateau_start: int = 400
    noise: float = 0.015
    heavy_tails: bool = False
    ar: float = 0.0
    spike_rate: float = 0.01
    spike_size: float = 0.08
    level: float = -0.80
    amplitude: float = 0.60
    num_epochs: int = 1000
    seed: int = 0

    def with_seed(self, seed: int) -> Family:
        return replace(self, seed=seed)


def _trend(f: Family, epochs: np.ndarray) -> np.ndarray:
    if f.kind == "improving":
        return f.level + f.amplitude * np.exp(-epochs / f.tau)
    if f.kind == "plateau":
        progress = np.clip(epochs / f.plateau_start, 0.0, 1.0)
        return f.level + f.amplitude * (1.0 - progress) ** 2
    raise ValueError(f"unknown family kind {f.kind!r} (improving | plateau)")


def simulate(f: Family) -> np.ndarray:
    """The simulated per-epoch ``val_loss`` of family ``f`` (``f.num_epochs`` values)."""
    rng = np.random.default_rng(f.seed)
    epochs = np.arange(f.num_epochs, dtype=np.float64)
    if f.heavy_tails:
        raw = rng.standard_t(3, f.num_epochs) / np.sqrt(3.0)  # unit variance
    else:
        raw = rng.standard_normal(f.num_epochs)
    noise = np.empty_like(raw)
    state = 0.0
    for i, r in enumerate(raw):  # AR(1) with the same stationary sd
        state = f.ar * state + np.sqrt(1.0 - f.ar**2) * r
        noise[i] = state
    spikes = (rng.random(f.num_epochs) < f.spike_rate) * f.spike_size * rng.uniform(0.5, 1.5, f.num_epochs)
    return _trend(f, epochs) + f.noise * noise + spikes


DEVELOPMENT_FAMILIES: tuple[Family, ...] = (
    Family("improving tau 250, sd 0.015", "improving", tau=250, noise=0.015),
    Family("improving tau 250, sd 0.02", "improving", tau=250, noise=0.02),
    Family("plateau at 400, sd 0.015", "plateau", plateau_start=400, noise=0.015),
    Family("plateau at 300, sd 0.02", "plateau", plateau_start=300, noise=0.02),
)
"""The families the defaults were chosen on (seeds 0-9 each)."""

HELD_OUT_FAMILIES: tuple[Family, ...] = (
    Family("improving tau 200, sd 0.01, t-noise", "improving", tau=200, noise=0.01, heavy_tails=True),
    Family("improving tau 300, sd 0.02, AR 0.3", "improving", tau=300, noise=0.02, ar=0.3, spike_rate=0.02),
    Family(
        "improving tau 250, sd 0.012, spikes 3 %", "improving", tau=250, noise=0.012, spike_rate=0.03, spike_size=0.15
    ),  # fmt: skip
    Family("plateau at 250, sd 0.01, t-noise", "plateau", plateau_start=250, noise=0.01, heavy_tails=True),
    Family("plateau at 500, sd 0.02, AR 0.3", "plateau", plateau_start=500, noise=0.02, ar=0.3),
    Family("plateau at 600, sd 0.018, spikes 3 %", "plateau", plateau_start=600, noise=0.018, spike_rate=0.03),
)
"""Families never looked at while choosing the defaults (other time constants, noise shapes, seeds 100-109)."""
