"""Training curves from ``trainer.state.log_history`` as a PNG.

Example:
    >>> history = [{"step": 1, "reward": 0.1, "kl": 0.0}, {"step": 2, "reward": 0.4, "kl": 0.01}]
    >>> plot_training_curves(history, "/tmp/curves.png", keys=["reward", "kl"])  # doctest: +SKIP
    PosixPath('/tmp/curves.png')
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence


def curves(log_history: Iterable[Mapping], key: str) -> tuple[list[float], list[float]]:
    """``(steps, values)`` of the finite numeric entries of ``key`` in a Trainer log history."""
    steps, values = [], []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            steps.append(float(entry.get("step", len(steps))))
            values.append(float(value))
    return steps, values


def plot_training_curves(
    log_history: Sequence[Mapping],
    path: str | os.PathLike,
    keys: Sequence[str],
    extra_points: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    title: str | None = None,
) -> Path | None:
    """Plot each of ``keys`` found in ``log_history`` (one panel each) and save a PNG at ``path``.

    ``extra_points`` adds panels (or points on a panel of the same name) such as held-out accuracy before and after
    training: ``{"eval accuracy": [(0, 0.12), (200, 0.31)]}``. Keys absent from the history are skipped; returns
    ``None`` (and writes nothing) when there is nothing to plot.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, list[float], list[float], str]] = []
    for key in keys:
        xs, ys = curves(log_history, key)
        if xs:
            panels.append((key, xs, ys, "-"))
    for name, points in (extra_points or {}).items():
        points = [(float(x), float(y)) for x, y in points if y is not None and math.isfinite(float(y))]
        if points:
            panels.append((name, [p[0] for p in points], [p[1] for p in points], "o-"))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (name, xs, ys, style) in zip(axes.flat, panels):
        ax.plot(xs, ys, style, linewidth=1.5, markersize=4)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
