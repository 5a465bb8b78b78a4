"""Matplotlib plots of metric histories across runs (no database access here).

Long histories are thinned deterministically, keeping each bucket's minimum and maximum, so a
spike never disappears from a plot and the same data always draws the same picture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from tracker.exceptions import InvalidValue


@lru_cache(maxsize=1)
def _figure_class() -> type:
    from matplotlib.figure import Figure

    class TrackerFigure(Figure):
        """A plain matplotlib Figure that Jupyter shows as a cell result even when pyplot (and
        so the inline backend's display hook) was never imported."""

        def _repr_png_(self) -> bytes:
            import io

            buf = io.BytesIO()
            self.savefig(buf, format="png", bbox_inches="tight")
            return buf.getvalue()

    return TrackerFigure


def thin(steps: np.ndarray, values: np.ndarray, max_points: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ~``max_points`` points: per bucket the first, min and max (in step order)."""
    n = len(steps)
    if max_points <= 0 or n <= max_points:
        return steps, values
    buckets = max(1, max_points // 3)
    edges = np.linspace(0, n, buckets + 1, dtype=np.int64)
    keep = []
    finite = np.where(np.isfinite(values), values, np.nan)
    for lo, hi in zip(edges[:-1], edges[1:]):
        if hi <= lo:
            continue
        keep.append(lo)
        chunk = finite[lo:hi]
        if np.all(np.isnan(chunk)):
            continue
        keep.append(lo + int(np.nanargmin(chunk)))
        keep.append(lo + int(np.nanargmax(chunk)))
    keep.append(n - 1)
    idx = np.unique(np.asarray(keep, dtype=np.int64))
    return steps[idx], values[idx]


def plot_histories(
    series: Mapping[str, Any],
    keys: Sequence[str] | None = None,
    *,
    x: str = "step",
    max_points: int = 2000,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Draw metric histories: one panel per key, one line per run.

    Args:
        series: run label -> long DataFrame with columns key, step, value, timestamp.
        keys: metric keys to draw (default: every key, sorted).
        x: ``"step"``, ``"time"`` (wall clock) or ``"relative"`` (seconds since the run's
            first point).
        max_points: thin each line to about this many points (0: draw everything).
        ax: draw into this Axes (only with a single key).
        title: figure title.

    Returns:
        The matplotlib ``Figure`` (displayed by Jupyter when it is a cell's result).

    Raises:
        InvalidValue: an unknown ``x``, ``ax`` with several keys, or nothing to draw.
    """
    if x not in ("step", "time", "relative"):
        raise InvalidValue(f"x must be 'step', 'time' or 'relative', not {x!r}.")
    all_keys = sorted({k for frame in series.values() for k in frame["key"].unique()})
    if keys is None:
        keys = all_keys
    else:
        keys = [keys] if isinstance(keys, str) else list(keys)
        missing = [k for k in keys if k not in all_keys]
        if missing and len(missing) == len(keys):
            raise InvalidValue(
                f"None of the runs has metric {missing[0]!r}. Logged keys: "
                f"{', '.join(all_keys[:20]) or 'none'}."
            )
    if not keys:
        raise InvalidValue("These runs have no metric points to plot yet.")
    if ax is not None and len(keys) > 1:
        raise InvalidValue(
            f"ax= takes one panel; pass one key (got {len(keys)}: {', '.join(keys)})."
        )

    if ax is not None:
        fig, axes = ax.figure, [ax]
    else:
        cols = 1 if len(keys) == 1 else 2
        rows = math.ceil(len(keys) / cols)
        fig = _figure_class()(figsize=(6.4 * cols, 3.6 * rows), layout="constrained")
        grid = fig.subplots(rows, cols, squeeze=False)
        axes = list(grid.ravel())
        for extra in axes[len(keys) :]:
            extra.set_visible(False)
    for key, panel in zip(keys, axes):
        for label, frame in series.items():
            part = frame[frame["key"] == key]
            if part.empty:
                continue
            values = part["value"].to_numpy(dtype=float)
            if x == "step":
                xs = part["step"].to_numpy()
            else:
                ts = part["timestamp"]
                seconds = (
                    ts.astype("int64").to_numpy() / 1e9 if hasattr(ts, "dt") else ts.to_numpy()
                )
                xs = seconds - seconds.min() if x == "relative" else ts.to_numpy()
            order = np.argsort(xs, kind="stable")
            xs, values = xs[order], values[order]
            plot_values = np.where(np.isfinite(values), values, np.nan)  # inf cannot be drawn
            if x == "time":
                idx = np.arange(len(xs))
                idx, _ = thin(idx, plot_values, max_points)
                xs, plot_values = xs[idx], plot_values[idx]
            else:
                xs, plot_values = thin(xs, plot_values, max_points)
            panel.plot(xs, plot_values, label=str(label), linewidth=1.2)
        panel.set_title(key)
        panel.set_xlabel({"step": "step", "time": "time", "relative": "seconds"}[x])
        panel.grid(True, alpha=0.3)
        if len(series) > 1:
            panel.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    return fig
