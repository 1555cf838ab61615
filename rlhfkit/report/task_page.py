"""The task demo's report: reads a `rlhfkit task-demo` run folder and writes one self-contained report.html.

Order: headline (held-out pass@1 before → after, its paired 95% interval, KL); the task and the run; the
held-out table (pass@1, pass@k, format failures, KL, length per policy); training curves (the grader's reward
and KL per step); samples before/after on the first held-out problems. Reads files only: summary.json,
eval/eval.json, <method>/metrics.jsonl. A missing file leaves its section out and is named.
"""

from __future__ import annotations

import datetime
import json
import logging
from html import escape
from pathlib import Path

from rlhfkit.errors import DataError
from rlhfkit.report import plots
from rlhfkit.report.checks import finite
from rlhfkit.report.layout import ci, figure, method_label, num, table, write_page

log = logging.getLogger(__name__)

N_SAMPLES = 8  # held-out problems in the samples table
CORRECT_KEY = "rollout/reward/rlhfkit.tasks:correct"  # the grader's batch mean, logged per step
FORMATTED_KEY = "rollout/reward/rlhfkit.tasks:formatted"
METHODS = ("grpo", "rloo")


def _read_json(path: Path, missing: list[str]) -> dict:
    if not path.is_file():
        missing.append(path.name if path.parent.name == "" else f"{path.parent.name}/{path.name}")
        return {}
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        log.warning("report: cannot read %s: %s", path, e)
        missing.append(f"{path.name} (unreadable: {e})")
        return {}
    return value if isinstance(value, dict) else {}


def _read_metrics(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except ValueError:  # a torn last line of a killed run
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def headline(summary: dict) -> str:
    """The one-sentence result from summary.json (plain text)."""
    p0, p1 = finite(summary.get("pass1_sft")), finite(summary.get("pass1_rl"))
    if p0 is None or p1 is None:
        return "No held-out results in this run (summary.json has no pass@1)."
    low_high = summary.get("pass1_delta_ci95") or [None, None]
    low, high = finite(low_high[0]), finite(low_high[1])
    verb = ("changed" if low is None or high is None else "raised" if low > 0 else "lowered" if high < 0
            else "did not clearly change")
    text = (f"{method_label(summary.get('rl_method', 'RL'))} {verb} held-out accuracy (pass@1) on "
            f"'{summary.get('task')}' from {p0:.1%} to {p1:.1%}")
    if low is not None and high is not None:
        text += f" (Δ {p1 - p0:+.1%}, 95% CI [{low:+.1%}, {high:+.1%}])"
    if finite(summary.get("kl_rl")) is not None:
        text += f" at KL {summary['kl_rl']:.2f} nats to the starting policy"
    return text + "."


def _setup_section(summary: dict, ev: dict, missing: list[str]) -> str:
    data, config = summary.get("data") or {}, summary.get("config") or {}
    parts = ["<h2>The task and the run</h2>"]
    if data:
        parts.append(f"<p>Task <b>{escape(str(data.get('task')))}</b>: "
                     f"{escape(str(data.get('description')))}. "
                     f"Correct when {escape(str(data.get('correct_when')))}. {data.get('n_train')} train "
                     f"problems, {data.get('n_heldout')} held out (never trained on).</p>")
    for algo, steps in (summary.get("steps") or {}).items():
        c = config.get(algo) or {}
        gen = c.get("generation") or {}
        lora = c.get("lora") or {}
        weights = f"LoRA r{lora.get('r')}" if lora.get("use_lora") else "all weights"
        parts.append(f"<p>{escape(method_label(algo))}: {steps} steps of {c.get('batch_size')} prompts × "
                     f"{c.get('group_size')} samples, lr {num((c.get('optim') or {}).get('lr'), 'g')} "
                     f"({weights}), "
                     f"β {c.get('kl_coef')}, {gen.get('max_new_tokens')} new tokens at τ "
                     f"{gen.get('temperature')}, "
                     f"dtype {escape(str(c.get('dtype')))}; reward "
                     f"{escape(', '.join(c.get('reward_fn') or []))}.</p>")
    sampler = ev.get("sampler") or {}
    if sampler:
        parts.append(f"<p>Evaluation: {ev.get('samples_per_problem')} samples per held-out problem and "
                     f"policy at τ {sampler.get('temperature')}, top-p {sampler.get('top_p')}, top-k "
                     f"{sampler.get('top_k')}, {sampler.get('max_new_tokens')} new tokens; intervals are 95% "
                     "percentile bootstraps over problems (paired for the differences).</p>")
    if missing:
        items = "".join(f"<li><code>{escape(m)}</code></li>" for m in missing)
        parts.append(f'<div class="note">Not in this run (sections left out):<ul>{items}</ul></div>')
    if config:
        rows = [[escape(k), escape(json.dumps(v))] for k, v in config.items() if not isinstance(v, dict)]
        config_table = table(["key", "value"], rows)
        parts.append(f"<details><summary>Config (top level)</summary>{config_table}</details>")
    return "\n".join(parts)


def _results_section(methods: dict, k) -> str:
    if not methods:
        return ""
    def pct(m: dict, key: str, spec: str = ".1%") -> str:
        return f"{num(m.get(key), spec)} {ci(m.get(key + '_ci95'), spec)}".strip()

    rows = [[f"<b>{escape(name)}</b>", pct(m, "pass1"),
             pct(m, "pass1_delta", "+.1%") if "pass1_delta" in m else "—",
             pct(m, "pass_k"), pct(m, "format_failure"),
             f"{num(m.get('kl'), '.2f')} {ci(m.get('kl_ci95'), '.2f')}",
             num(m.get("response_len"), ".1f"), num(m.get("eos_rate"), ".0%")]
            for name, m in methods.items() if isinstance(m, dict)]
    header = ["policy", "pass@1 [95% CI]", "Δ pass@1 vs sft [95% CI]", f"pass@{k} [95% CI]",
              "format failures [95% CI]", "KL nats [95% CI]", "response tokens", "ended (EOS)"]
    return "<h2>Held-out accuracy</h2>" + table(header, rows, numeric=(1, 2, 3, 4, 5, 6, 7))


def _curves_section(metrics: dict[str, list[dict]]) -> str:
    online = {method_label(m): rows for m, rows in metrics.items() if rows}
    if not online:
        return ""
    figures = [
        (CORRECT_KEY, "Training reward: share correct", "share of the batch correct",
         "The grader's reward per step (the batch's k samples of each training prompt)."),
        (FORMATTED_KEY, "Training batches: answer readable", "share with an answer",
         "Share of each step's samples with a readable answer (logged at weight 0, not trained on)."),
        ("rollout/kl", "KL to the starting policy (k1, sampled)", "nats per response",
         "KL(policy ‖ start) of each step's samples."),
        ("rollout/response_len", "Response length", "tokens", "Mean response length per step."),
    ]
    parts = ["<h2>Training curves</h2>"]
    for key, title, ylabel, caption in figures:
        if any(key in row for rows in online.values() for row in rows):
            parts.append(figure(plots.methods_series_figure(online, "step", key, title, ylabel), caption))
    return "\n".join(parts)


def _samples_section(ev: dict) -> str:
    rows, policies = ev.get("rows") or [], ev.get("policies") or []
    if not rows or not policies:
        return ""
    body = []
    for r in rows[:N_SAMPLES]:
        cells = [escape(str(r.get("prompt", ""))), escape(str(r.get("answer", "")))]
        for p in policies:
            entry = r.get(p) or {}
            lines = [f"{'✓' if s.get('correct') else '✗' if s.get('parsed') is not None else '∅'} "
                     f"{escape(str(s.get('response', '')))}" for s in (entry.get("samples") or [])[:2]]
            cells.append("<br>".join(lines) + f'<div class="score">{entry.get("n_correct", "?")}/'
                         f'{entry.get("n", "?")} correct</div>')
        body.append(cells)
    return (f"<h2>Samples (first {len(body)} held-out problems; ✓ correct, ✗ wrong, ∅ format failure)</h2>"
            + table(["problem", "answer"] + [f"{p} (2 samples)" for p in policies], body, cls="samples"))


def build_task_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report.html` from a task-demo run folder and return its path.

    Raises:
        DataError: `run_dir` is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(str(run_dir), hint="not a folder; pass the output folder of `rlhfkit task-demo`")
    missing: list[str] = []
    summary = _read_json(run_dir / "summary.json", missing)
    ev = _read_json(run_dir / "eval" / "eval.json", missing)
    methods = summary.get("methods") if isinstance(summary.get("methods"), dict) else ev.get("methods") or {}
    metrics = {m: _read_metrics(run_dir / m / "metrics.jsonl") for m in METHODS
               if (run_dir / m / "metrics.jsonl").is_file()}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title = f"rlhfkit task demo: {run_dir.resolve().name}"
    sections = [
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">{escape(str(run_dir.resolve()))} · generated {stamp}</p>',
        f'<p class="headline">{escape(headline(summary))}</p>',
        _setup_section(summary, ev, missing),
        _results_section(methods, ev.get("samples_per_problem", summary.get("k", "k"))),
        _curves_section(metrics),
        _samples_section(ev),
    ]
    out = run_dir / "report.html"
    write_page(out, title, sections)
    log.info("wrote %s", out)
    return out
