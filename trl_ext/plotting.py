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


def y_limits(values: Sequence[float], unit_interval: bool = False) -> tuple[float, float] | None:
    """Y-axis range for a panel, or ``None`` to let matplotlib autoscale a series that varies.

    A flat series (``max − min ≤ 1e-3 · max(|min|, |max|)``) would otherwise be drawn on a ±0.04-ish axis that makes
    rounding noise look like a trend; it gets ``v ± max(0.25·|v|, 0.5)`` instead, or ``[-0.05, 1.05]`` when all values
    lie in ``[0, 1]``. ``unit_interval=True`` (accuracies, fractions) uses ``[-0.05, 1.05]`` whenever the values fit.

    Example:
        >>> y_limits([2.0, 2.0])
        (1.5, 2.5)
        >>> y_limits([0.5, 0.5]), y_limits([0.1, 0.9]), y_limits([0.1, 0.9], unit_interval=True)
        ((-0.05, 1.05), None, (-0.05, 1.05))
    """
    if not values:
        return None
    lo, hi = min(values), max(values)
    in_unit = 0.0 <= lo and hi <= 1.0
    if unit_interval and in_unit:
        return (-0.05, 1.05)
    scale = max(abs(lo), abs(hi))
    if hi - lo > 1e-3 * scale:
        return None
    if in_unit:
        return (-0.05, 1.05)
    half = max(0.25 * scale, 0.5)
    centre = (lo + hi) / 2
    return (centre - half, centre + half)


def plot_training_curves(
    log_history: Sequence[Mapping],
    path: str | os.PathLike,
    keys: Sequence[str],
    extra_points: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    title: str | None = None,
) -> Path | None:
    """Draw :func:`training_curves_figure` and save it as a PNG at ``path``; ``None`` (nothing written) when there
    is nothing to plot."""
    import matplotlib.pyplot as plt

    fig = training_curves_figure(log_history, keys, extra_points, title)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def training_curves_figure(
    log_history: Sequence[Mapping],
    keys: Sequence[str],
    extra_points: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    title: str | None = None,
):
    """Plot each of ``keys`` found in ``log_history`` (one panel each) and save a PNG at ``path``.

    Every curve has markers, the x axis shows whole optimizer steps, no tick label carries a matplotlib offset
    (``+2.3e0``), a flat series gets a readable y-range (:func:`y_limits`). When evaluation ran, ``eval_<key>``
    is drawn on ``<key>``'s panel (a second, dashed line with a legend) unless ``eval_<key>`` is a panel of its own.
    ``extra_points`` adds panels (or points on a panel of the same name) such as held-out accuracy before and after
    training: ``{"eval accuracy": [(0, 0.12), (200, 0.31)]}``. Keys absent from the history are skipped; returns
    ``None`` when there is nothing to plot, else the matplotlib figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    # (panel name, [(label, xs, ys, style)], unit_interval)
    panels: list[tuple[str, list[tuple[str, list[float], list[float], str]], bool]] = []
    for key in keys:
        xs, ys = curves(log_history, key)
        lines = [("train" if not key.startswith("eval_") else "eval", xs, ys, "o-")] if xs else []
        eval_key = f"eval_{key}"
        if not key.startswith("eval_") and eval_key not in keys:
            exs, eys = curves(log_history, eval_key)
            if exs:
                lines.append(("eval", exs, eys, "s--"))
        if lines:
            panels.append((key, lines, False))
    for name, points in (extra_points or {}).items():
        points = [(float(x), float(y)) for x, y in points if y is not None and math.isfinite(float(y))]
        if points:
            panels.append((name, [("held-out", [p[0] for p in points], [p[1] for p in points], "o-")], True))
    if not panels:
        return None
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, lines, unit_interval) in zip(axes.flat, panels):
        for label, xs, ys, style in lines:
            ax.plot(xs, ys, style, linewidth=1.5, markersize=4, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.ticklabel_format(useOffset=False)
        limits = y_limits([y for _, _, ys, _ in lines for y in ys], unit_interval=unit_interval)
        if limits:
            ax.set_ylim(*limits)
        if len(lines) > 1:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title or "Training curves")
    fig.tight_layout()
    fig.canvas.draw()  # tick labels (and offsets) are computed at draw time
    return fig
