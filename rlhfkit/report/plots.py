"""Figures of metrics.jsonl series and held-out eval results (matplotlib, Agg); PNGs written atomically.

Each `*_figure` function takes plain rows or numbers and returns a matplotlib Figure; `save_figure` writes it
to a file and `figure_png` returns the PNG bytes (the HTML report embeds those). matplotlib is imported inside
the functions so `import rlhfkit` stays fast.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

FIGSIZE = (6, 4)
DPI = 100


def _subplots(*args, figsize=FIGSIZE, **kwargs):
    """A figure and its axes outside pyplot: no backend is chosen or switched (a notebook's inline backend
    stays as it was, and these figures never show up there), nothing to close; savefig renders with Agg."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def _points(rows: list[dict], x: str, y: str) -> list[tuple[float, float]]:
    """(x, y) pairs of the rows where both are present and finite (metrics.jsonl writes NaN as null)."""
    out = []
    for r in rows:
        a, b = r.get(x), r.get(y)
        if all(isinstance(v, (int, float)) and math.isfinite(v) for v in (a, b)):
            out.append((a, b))
    return out


def _draw_series(ax, rows: list[dict], x: str, ys: dict[str, str], ylabel: str) -> list:
    """Plot each metric key in `ys` (key -> legend label) against `x` on `ax`; return the line handles."""
    lines = []
    for i, (key, label) in enumerate(ys.items()):
        pts = _points(rows, x, key)
        if pts:
            lines += ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, label=label, color=f"C{i}")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return lines


def save_figure(fig, out: str | Path) -> Path:
    """Write `fig` as a PNG to `out` (via a temporary file and os.replace)."""
    out = Path(out)
    tmp = out.with_name(f".{out.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=DPI)
    os.replace(tmp, out)
    return out


def figure_png(fig) -> bytes:
    """The PNG bytes of `fig`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return buf.getvalue()


def series_figure(rows: list[dict], x: str, ys: dict[str, str], title: str, ylabel: str):
    """Line plot of the metric keys in `ys` (key -> legend label) against `x` over the rows that have them."""
    fig, ax = _subplots(figsize=FIGSIZE)
    if _draw_series(ax, rows, x, ys, ylabel):
        ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_series(
    rows: list[dict], x: str, ys: dict[str, str], out: str | Path, title: str, ylabel: str
) -> Path:
    """`series_figure` saved as a PNG at `out`."""
    return save_figure(series_figure(rows, x, ys, title, ylabel), out)


def rm_curves_figure(rm_rows: list[dict]):
    """Reward-model training per epoch: Bradley–Terry loss (train, held-out) and held-out accuracy."""
    fig, (ax_loss, ax_acc) = _subplots(1, 2, figsize=(10, 4))
    if _draw_series(ax_loss, rm_rows, "epoch", {"train/loss": "train", "eval_loss": "held-out"}, "loss"):
        ax_loss.legend()
    ax_loss.set_title("Bradley–Terry loss")
    _draw_series(ax_acc, rm_rows, "epoch", {"eval_accuracy": "held-out"}, "accuracy")
    ax_acc.set_title("Held-out accuracy P(r_chosen > r_rejected)")
    fig.tight_layout()
    return fig


def proxy_gold_figure(rows: list[dict], title: str = "PPO rollouts: proxy vs gold reward"):
    """An online method's rollouts per step (metrics.jsonl rows): learned-RM (proxy) score on the left axis,
    gold reward of the same samples on the right. Two axes because the scales differ (the proxy may be
    normalised); what matters is whether they move together.
    """
    fig, ax = _subplots(figsize=FIGSIZE)
    lines = _draw_series(ax, rows, "step", {"rollout/score_mean": "proxy: learned RM (left axis)"},
                         "proxy (learned RM) score")
    ax_gold = ax.twinx()
    gold = _points(rows, "step", "rollout/gold_mean")
    if gold:
        lines += ax_gold.plot(*zip(*gold), color="C1", linestyle="--", marker="s" if len(gold) < 30 else None,
                              label="gold reward (right axis)")
    ax_gold.set_ylabel("gold reward", color="C1")
    ax.set_ylabel("proxy (learned RM) score", color="C0")
    if lines:
        ax.legend(lines, [line.get_label() for line in lines], loc="best")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def methods_series_figure(rows_by_method: dict[str, list[dict]], x: str, key: str, title: str, ylabel: str):
    """One metric key against `x`, one line per method (name -> its metrics rows)."""
    fig, ax = _subplots(figsize=FIGSIZE)
    lines = []
    for i, (name, rows) in enumerate(rows_by_method.items()):
        pts = _points(rows, x, key)
        if pts:
            lines += ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, label=name, color=f"C{i}")
    if lines:
        ax.legend()
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reward_histograms_figure(values: dict[str, list[float]], xlabel: str = "gold reward per prompt"):
    """Overlaid histograms, one per policy (name -> per-prompt values), on shared bins."""
    fig, ax = _subplots(figsize=FIGSIZE)
    everything = [v for vs in values.values() for v in vs]
    if everything:
        lo, hi = min(everything), max(everything)
        bins = 20 if hi > lo else 1
        for name, vs in values.items():
            mean = sum(vs) / len(vs)
            ax.hist(vs, bins=bins, range=(lo, hi) if hi > lo else None, alpha=0.5,
                    label=f"{name} (mean {mean:.3f})")
        ax.legend()
    ax.set_xlabel(xlabel)
    ax.set_ylabel("prompts")
    ax.set_title("Held-out reward distribution")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reward_vs_kl_figure(methods: dict[str, dict]):
    """Gold reward against √KL to the reference, one point per method, with 95% CI error bars.

    √KL is the x-axis of Gao et al. 2022 ("Scaling Laws for Reward Model Overoptimization", fig. 1): methods
    that buy the same gold reward with less KL sit further up and left. `methods[name]` needs `gold_reward`
    and `kl`; `gold_reward_ci95` and `kl_ci95` ([low, high]) are drawn when present, and `beta` (the KL
    coefficient of PPO, DPO's β) in the point's label. A negative KL estimate counts as 0.
    """
    fig, ax = _subplots(figsize=FIGSIZE)
    for i, (name, m) in enumerate(methods.items()):
        gold, kl = m.get("gold_reward"), m.get("kl")
        if gold is None or kl is None:
            continue
        x = math.sqrt(max(kl, 0.0))
        xerr = yerr = None
        if m.get("kl_ci95"):
            lo, hi = (math.sqrt(max(v, 0.0)) for v in m["kl_ci95"])
            xerr = [[max(x - lo, 0.0)], [max(hi - x, 0.0)]]
        if m.get("gold_reward_ci95"):
            lo, hi = m["gold_reward_ci95"]
            yerr = [[max(gold - lo, 0.0)], [max(hi - gold, 0.0)]]
        ax.errorbar([x], [gold], xerr=xerr, yerr=yerr, fmt="o", capsize=4, color=f"C{i}")
        label = f"{name} (β {m['beta']:g})" if m.get("beta") is not None else name
        ax.annotate(label, (x, gold), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("√KL(policy ‖ reference)  [√nats per response]")
    ax.set_ylabel("held-out gold reward")
    ax.set_title("Gold reward vs KL budget")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def improvement_figure(diffs: list[float], label: str):
    """Sorted bar chart of per-prompt differences (e.g. rlhf − sft gold reward); green above 0, red below."""
    fig, ax = _subplots(figsize=FIGSIZE)
    ordered = sorted(diffs)
    ax.bar(range(len(ordered)), ordered, width=0.9, color=["C2" if d > 0 else "C3" for d in ordered])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xlabel("held-out prompts, sorted")
    ax.set_ylabel(label)
    ax.set_title(f"Per-prompt change: {label}")
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


def frontier_figure(points: list[dict], fits: dict[str, dict], names: dict[str, str] | None = None):
    """The reward–KL frontier: gold gain (left) and proxy gain (right) over the SFT policy against √KL.

    One curve per method through its points in KL order, starting at the SFT policy (0, 0), each point
    labelled with its β or n; gold gains carry their 95% interval; Gao et al.'s fitted form is dashed.

    Args:
        points: frontier.json rows (`method`, `label`, `sqrt_kl`, `gold_delta`, `gold_delta_ci95`,
            `rm_delta`).
        fits: frontier.json `fits` ({method: {"sqrt_kl": grid, "gold"|"proxy": {"curve": values}}}).
        names: display name of each method (default: the method key).
    """
    fig, axes = _subplots(1, 2, figsize=(12, 4.8))
    panels = ((axes[0], "gold_delta", "gold", "gold reward − SFT's"),
              (axes[1], "rm_delta", "proxy", "proxy (learned RM) reward − SFT's"))
    for ax, key, fit_key, ylabel in panels:
        for i, method in enumerate(dict.fromkeys(p["method"] for p in points)):
            pts = sorted(((p["sqrt_kl"], p[key], p) for p in points if p["method"] == method
                          and all(isinstance(p.get(k), (int, float)) and math.isfinite(p[k])
                                  for k in ("sqrt_kl", key))), key=lambda t: t[0])
            if not pts:
                continue
            color = f"C{i}"
            ax.plot([0.0] + [x for x, _, _ in pts], [0.0] + [y for _, y, _ in pts], marker="o", color=color,
                    label=(names or {}).get(method, method))
            for x, y, p in pts:
                if key == "gold_delta" and p.get("gold_delta_ci95"):
                    lo, hi = p["gold_delta_ci95"]
                    ax.errorbar([x], [y], yerr=[[max(y - lo, 0.0)], [max(hi - y, 0.0)]], fmt="none",
                                color=color, capsize=3, alpha=0.6)
                ax.annotate(p["label"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            fit = fits.get(method, {})
            if fit_key in fit:
                ax.plot(fit["sqrt_kl"], fit[fit_key]["curve"], linestyle="--", color=color, alpha=0.7)
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.set_xlabel("√KL(policy ‖ SFT)  [√nats per response]")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0].set_title("Gold reward (what the annotator wants)")
    axes[1].set_title("Proxy reward (the learned RM)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return fig
