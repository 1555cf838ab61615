"""Line plots of metrics.jsonl series (matplotlib, Agg backend, written atomically)."""

from __future__ import annotations

import os
from pathlib import Path


def plot_series(rows: list[dict], x: str, ys: dict[str, str], out: str | Path, title: str, ylabel: str) -> Path:
    """Plot `ys` (metric key -> legend label) against `x` over the rows that have them; save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label in ys.items():
        pts = [(r[x], r[key]) for r in rows if r.get(key) is not None and r.get(x) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, label=label)
    ax.set_title(title)
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out
