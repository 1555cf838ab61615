"""The reward–KL frontier page: frontier.html (and its section in the demo's report.html) from frontier.json.

Reads frontier.json only (written by `rlhfkit frontier`, which computed every figure, fit and note in it);
never imports a trainer or loads a model.
"""

from __future__ import annotations

import json
import logging
from html import escape
from pathlib import Path

from rlhfkit.errors import DataError
from rlhfkit.report import plots
from rlhfkit.report.layout import METHOD_LABELS, ci, figure, method_label, num, table, write_page

log = logging.getLogger(__name__)


def points_and_fits(frontier: dict) -> tuple[list[dict], dict]:
    """frontier.json's points and fits, leaving out what is not an object (a hand-edited file may hold it)."""
    points = [p for p in frontier.get("points") or [] if isinstance(p, dict)]
    return points, frontier.get("fits") if isinstance(frontier.get("fits"), dict) else {}


def frontier_section(frontier: dict, *, heading: str = "Reward–KL frontier", link: str | None = None) -> str:
    """The chart, the over-optimisation notes, the fits and the points of frontier.json as HTML."""
    points, fits = points_and_fits(frontier)
    notes = [n for n in frontier.get("overoptimisation") or [] if isinstance(n, dict)]
    parts = [f"<h2>{escape(heading)}</h2>"]
    if link:
        parts.append(f'<p>Full page: <a href="{escape(link)}">{escape(link)}</a></p>')
    methods = ", ".join(method_label(m) for m in dict.fromkeys(p.get("method") for p in points))
    parts.append(f"<p>{escape(_about(frontier, len(points), methods))}</p>")
    if not points:
        return "\n".join(parts)
    parts.append(figure(plots.frontier_figure(points, fits, METHOD_LABELS),
                        "Gain over the SFT policy against √KL, gold (left) and proxy (right): one curve per "
                        "method from SFT (0, 0) through its points (labelled β or n), 95% intervals on gold, "
                        "Gao et al.'s fitted form dashed. Up and to the left is better."))
    parts.append(_notes(notes))
    parts.append(_fits_table(fits))
    parts.append(_points_table(points))
    return "\n".join(parts)


def _about(frontier: dict, n_points: int, methods: str) -> str:
    text = (f"{n_points} points ({methods or 'none'}) on {frontier.get('n_eval_prompts', '?')} held-out "
            "prompts, every one scored by the same gold and proxy. Gains are over the SFT policy: for the "
            f"trained points its evaluation in the same call ({frontier.get('eval_samples_per_prompt', '?')} "
            "samples per prompt), for best-of-n n = 1 on the same samples")
    if frontier.get("bon_samples_per_prompt"):
        text += f" ({frontier['bon_samples_per_prompt']} per prompt)"
    return text + f". KL: {frontier.get('kl', '?')}."


def _notes(notes: list[dict]) -> str:
    if not notes:
        return ('<p class="ok">No over-optimisation along any sweep: nowhere did the proxy gain rise from '
                "one point to the next while the gold gain fell.</p>")
    items = "".join(f"<li>{escape(str(n.get('text', '')))}</li>" for n in notes)
    return ('<div class="warn"><b>Over-optimisation</b>: where, in KL order, the proxy kept rising while '
            f"gold fell<ul>{items}</ul></div>")


def _fits_table(fits: dict) -> str:
    rows = []
    for method, fit in fits.items():
        if not isinstance(fit, dict):
            continue
        form = "d(α − β d)" if fit.get("form") == "bon" else "d(α − β log d)"
        if "skipped" in fit:
            rows.append([escape(method_label(method)), escape(form), escape(str(fit["skipped"])), "", "", ""])
            continue
        gold, proxy = fit.get("gold") or {}, fit.get("proxy") or {}
        rows.append([escape(method_label(method)), escape(form), num(gold.get("alpha")),
                     num(gold.get("beta")), num(proxy.get("alpha")), num(proxy.get("beta"))])
    return ("<p>Gao et al. 2022's forms fitted by least squares to the gains against d = √KL "
            "(R(0) = 0 by construction):</p>"
            + table(["method", "form", "gold α", "gold β", "proxy α", "proxy β"], rows, numeric=(2, 3, 4, 5)))


def _points_table(points: list[dict]) -> str:
    rows = [[escape(method_label(str(p.get("method")))), escape(str(p.get("label", ""))),
             f"{num(p.get('kl'), '.2f')} {ci(p.get('kl_ci95'), '.2f')}", num(p.get("sqrt_kl"), ".2f"),
             f"{num(p.get('gold_reward'))} {ci(p.get('gold_reward_ci95'))}",
             f"{num(p.get('gold_delta'), '+.3f')} {ci(p.get('gold_delta_ci95'), '+.3f')}",
             num(p.get("rm_reward")), num(p.get("rm_delta"), "+.3f"), num(p.get("response_len"), ".1f")]
            for p in points]
    return table(["method", "β or n", "KL nats [95% CI]", "√KL", "gold reward [95% CI]", "gold gain [95% CI]",
                  "RM reward", "RM gain", "response length"], rows, numeric=(2, 3, 4, 5, 6, 7, 8))


def read_frontier(folder: str | Path) -> dict:
    """frontier.json of `folder`, parsed. Raises DataError when it is missing or not a JSON object."""
    path = Path(folder) / "frontier.json"
    if not path.is_file():
        raise DataError(str(path), hint="not found; run `rlhfkit frontier --demo RUN` first")
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise DataError(str(path), hint=f"not valid JSON: {e}") from None
    if not isinstance(value, dict):
        raise DataError(str(path), hint=f"expected a JSON object, found {type(value).__name__}")
    return value


def build_frontier_report(folder: str | Path) -> Path:
    """Write `folder/frontier.html` (and its chart alone as `folder/frontier.png`, when there are points) from
    `folder/frontier.json`; return the page's path."""
    frontier = read_frontier(folder)
    points, fits = points_and_fits(frontier)
    if points:
        plots.save_figure(plots.frontier_figure(points, fits, METHOD_LABELS), Path(folder) / "frontier.png")
    out = Path(folder) / "frontier.html"
    title = f"rlhfkit reward–KL frontier: {Path(frontier.get('demo') or folder).name}"
    write_page(out, title, [f"<h1>{escape(title)}</h1>",
                            f'<p class="meta">{escape(str(Path(folder).resolve()))}</p>',
                            frontier_section(frontier, heading="Gold and proxy reward against KL")])
    log.info("wrote %s", out)
    return out
