"""The run report: reads a run folder's files and writes one self-contained report.html (plots as base64 PNG).

Order, so a reviewer gets the answer in two minutes: headline sentence; what was trained on what and how
long each stage took; over-optimisation warnings (per method); held-out tables and plots; the reward–KL
frontier when `rlhfkit frontier` ran into RUN/frontier; training curves of every online method; samples.
Any file may be missing (an `rlhfkit eval` run has only eval/): the report renders what exists and names
what is not there. Reads files only; never imports a trainer or loads a model.
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from rlhfkit.errors import DataError
from rlhfkit.report import plots
from rlhfkit.report.checks import finite, finite_pair, overoptimisation_warnings
from rlhfkit.report.frontier_page import frontier_section
from rlhfkit.report.layout import ci as _ci
from rlhfkit.report.layout import duration as _duration
from rlhfkit.report.layout import figure as _figure
from rlhfkit.report.layout import method_label, write_page
from rlhfkit.report.layout import num as _num
from rlhfkit.report.layout import table as _table

log = logging.getLogger(__name__)

N_SAMPLES = 8  # prompts in the side-by-side samples table
# file in the run folder -> (RunFiles attribute, what the report shows from it; named if the file is missing)
RUN_FILES = {
    "summary.json": ("summary", "timings, RM validation, config (held-out statistics: eval/eval.json)"),
    "prefs/summary.json": ("prefs", "preference-data description"),
    "rm/metrics.jsonl": ("rm_rows", "reward-model training curves"),
    "eval/eval.json": ("eval", "held-out statistics (headline, methods table), distributions and samples"),
}
# read when present, never named as missing: `rlhfkit frontier` is a separate command
OPTIONAL_FILES = {"frontier/frontier.json": ("frontier", "the reward–KL frontier")}
# the online methods: <method>/metrics.jsonl shares the rollout/* keys; their β is logged under BETA_KEYS
ONLINE = ("ppo", "grpo", "rloo", "reinforce_pp")
BETA_KEYS = {"ppo": "ppo/kl_coef", "grpo": "rl/kl_coef", "rloo": "rl/kl_coef", "reinforce_pp": "rl/kl_coef"}
# config keys (last dotted component) that say what was trained on what
SETUP_KEYS = ("policy", "base", "model", "reward_model", "value_model", "prompts", "data", "eval_data")


@dataclass
class RunFiles:
    """The parsed files of one run folder; a missing or unreadable file keeps its empty default."""

    summary: dict = field(default_factory=dict)
    prefs: dict = field(default_factory=dict)
    rm_rows: list[dict] = field(default_factory=list)
    online_rows: dict[str, list[dict]] = field(default_factory=dict)  # ONLINE method -> its metrics rows
    eval: dict = field(default_factory=dict)
    frontier: dict = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # expected files that are absent -> what they show
    problems: list[str] = field(default_factory=list)  # unreadable files or lines, shown in the report


def read_run(run_dir: str | Path) -> RunFiles:
    """Parse the RUN_FILES, OPTIONAL_FILES and online metrics present in `run_dir`; never raises on a missing
    or malformed file. An online method's metrics.jsonl is named as missing when the method was evaluated."""
    run = RunFiles()
    for name, (attr, what) in {**RUN_FILES, **OPTIONAL_FILES}.items():
        value = _read(Path(run_dir), name, run.problems)
        if value is not None:
            setattr(run, attr, value)
        elif name in RUN_FILES and not (Path(run_dir) / name).is_file():
            run.missing[name] = what
    summary_methods = run.summary.get("methods") if isinstance(run.summary.get("methods"), dict) else {}
    evaluated = set(_eval_policies(run.eval)) | set(summary_methods)
    for method in ONLINE:
        name = f"{method}/metrics.jsonl"
        rows = _read(Path(run_dir), name, run.problems)
        if rows is not None:
            run.online_rows[method] = rows
        elif method in evaluated and not (Path(run_dir) / name).is_file():
            run.missing[name] = f"{method_label(method)} training curves"
    return run


def _read(run_dir: Path, name: str, problems: list[str]):
    """The parsed file (rows of a .jsonl, else a JSON object), or None when it is absent or unreadable (then
    said in `problems`)."""
    path = run_dir / name
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        if name.endswith(".jsonl"):
            return _parse_jsonl(text, name, problems)
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object, found {type(value).__name__}")
        return value
    except (OSError, ValueError) as e:  # json.JSONDecodeError is a ValueError
        log.warning("report: cannot read %s: %s", path, e)
        problems.append(f"{name}: {e}")
        return None


def _parse_jsonl(text: str, name: str, problems: list[str]) -> list[dict]:
    # A run killed mid-write can leave a torn last line: skip such lines (and say so), keep the rest.
    rows, bad = [], []
    for i, line in enumerate(text.splitlines(), start=1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError:
            row = "bad"
        if isinstance(row, dict):
            rows.append(row)
        elif row is not None:
            bad.append(i)
    if bad:
        problems.append(f"{name}: skipped unreadable line(s) {', '.join(map(str, bad[:5]))}")
    return rows


def pick_policies(policies: list[str], baseline: str | None = None) -> tuple[str | None, str | None]:
    """(baseline, candidate): `baseline` if given, else "sft", else the first policy; then "ppo", else the
    first other one."""
    if baseline not in policies:
        baseline = "sft" if "sft" in policies else (policies[0] if policies else None)
    base = baseline
    others = [p for p in policies if p != base]
    return base, ("ppo" if "ppo" in others else (others[0] if others else None))


def _eval_rows(ev: dict) -> list[dict]:
    return [r for r in ev.get("rows") or [] if isinstance(r, dict)]


def _eval_policies(ev: dict) -> list[str]:
    return [p for p in ev.get("policies") or [] if isinstance(p, str)]


def _entry(row: dict, policy: str) -> dict:
    """One policy's {"response", "gold_reward", "rm_reward", "kl", "response_len", ...} in an eval row
    ({} when absent)."""
    e = row.get(policy)
    return e if isinstance(e, dict) else {}


def _values(rows: list[dict], policy: str, key: str) -> list[float]:
    return [v for v in (finite(_entry(r, policy).get(key)) for r in rows) if v is not None]


def _paired(rows: list[dict], a: str, b: str, key: str) -> tuple[list[float], list[float]]:
    """Values of `key` for policies a and b on the prompts where both have one, aligned by prompt."""
    pairs = [(finite(_entry(r, a).get(key)), finite(_entry(r, b).get(key))) for r in rows]
    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def _mean(xs: list[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _flatten(config: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------- sections
def headline(methods: dict, base: str | None, cand: str | None, rlhf: str = "RLHF") -> str:
    """The one-sentence result, read from the evaluation's per-method statistics: gold reward of `base` and
    `cand` with the candidate's Δ (95% CI), KL, and gold win rate against `base` (plain text)."""
    b, c = _method(methods, base), _method(methods, cand)
    g0, g1 = finite(b.get("gold_reward")), finite(c.get("gold_reward"))
    if g0 is None or g1 is None:
        golds = [f"{name} {_num(m.get('gold_reward'))}" for name, m in methods.items()
                 if isinstance(m, dict) and finite(m.get("gold_reward")) is not None]
        if golds:
            return "Held-out gold reward: " + ", ".join(golds) + "."
        return "No held-out results in this run: neither summary.json nor eval/eval.json has gold rewards."
    delta, ci = finite(c.get("gold_delta")), finite_pair(c.get("gold_delta_ci95"))
    verb = ("changed" if ci is None else "raised" if ci[0] > 0 else "lowered" if ci[1] < 0
            else "did not clearly change")
    text = f"{rlhf} {verb} held-out gold reward from {g0:.3f} to {g1:.3f}"
    if delta is not None:
        text += f" (Δ = {delta:+.3f}" + (f", 95% CI {_ci(ci)})" if ci else ")")
    if finite(c.get("kl")) is not None:
        text += f" at KL = {_num(c['kl'], '.2f')} nats"
    if finite(c.get("win_rate_gold")) is not None:
        text += f"; gold win rate vs {(base or 'sft').upper()} {_num(c['win_rate_gold'], '.2f')}"
        text += f" {_ci(c.get('win_rate_gold_ci95'), '.2f')}".rstrip()
    return text + "."


def _method(methods: dict, name: str | None) -> dict:
    m = methods.get(name) if name is not None else None
    return m if isinstance(m, dict) else {}


def _subheadline(summary: dict, methods: dict, base: str | None, cand: str | None) -> str:
    parts = []
    rm0, rm1 = (finite(_method(methods, name).get("rm_reward")) for name in (base, cand))
    if rm0 is not None and rm1 is not None:
        parts.append(f"Learned RM (proxy) reward {_num(rm0)} → {_num(rm1)}.")
    if finite(summary.get("rm_val_accuracy")) is not None:
        parts.append(f"RM held-out accuracy {_num(summary['rm_val_accuracy'], '.2f')} vs the noisy labels, "
                     f"{_num(summary.get('rm_val_gold_accuracy'), '.2f')} vs the gold ordering.")
    return " ".join(parts)


def _setup_sentences(run: RunFiles) -> list[str]:
    """Plain-text sentences: the data, the models and how long each training stage ran."""
    out, p = [], run.prefs
    if p:
        out.append(f"Preferences: {p.get('n_pairs', '?')} pairs from {p.get('n_prompts', '?')} prompts × "
                   f"{p.get('k', '?')} responses, labelled by the simulated annotator (Bradley–Terry, "
                   f"temperature {p.get('label_temperature', '?')}); {_num(p.get('gold_agreement'), '.0%')} "
                   "of labels agree with the gold ordering.")
    config = run.summary.get("config")
    flat = _flatten(config) if isinstance(config, dict) else {}
    chosen = {k: v for k, v in flat.items() if k.split(".")[-1] in SETUP_KEYS and isinstance(v, str)}
    if chosen:
        out.append("Models and data: " + "; ".join(f"{k} = {v}" for k, v in chosen.items()) + ".")
    if run.rm_rows:
        epochs = {r.get("epoch") for r in run.rm_rows if r.get("epoch") is not None}
        out.append(f"Reward model: {len(epochs) or len(run.rm_rows)} epoch(s); final held-out accuracy "
                   f"{_num(run.rm_rows[-1].get('eval_accuracy'), '.2f')}.")
    for method, rows in run.online_rows.items():
        if not rows:
            continue
        times = [t for t in (finite(r.get("step_time_s")) for r in rows) if t is not None]
        last = rows[-1]
        out.append(f"{method_label(method)}: {last.get('step', len(rows))} steps; final β "
                   f"({BETA_KEYS[method]}) {_num(last.get(BETA_KEYS[method]), '.3g')}; mean step time "
                   f"{_duration(_mean(times))}.")
    if run.eval:
        out.append(f"Held-out evaluation: {len(_eval_rows(run.eval))} prompts; policies "
                   f"{', '.join(_eval_policies(run.eval))}.")
        if isinstance(run.eval.get("sampler"), dict):
            out.append(sampler_sentence(run.eval["sampler"]))
    return out


def sampler_sentence(sampler: dict) -> str:
    """How eval/eval.json's responses were sampled, and whether they are samples of the policies
    themselves."""
    top_p, top_k = finite(sampler.get("top_p")), finite(sampler.get("top_k"))
    text = (f"Evaluation sampler: temperature {_num(sampler.get('temperature'), 'g')}, "
            f"top-p {_num(top_p, 'g')}, top-k {'off' if top_k == 0 else _num(top_k, 'g')}")
    if top_p == 1 and top_k == 0:
        return text + " (exact samples of each policy at that temperature)."
    return (text + ": truncated, so the responses are not samples of the policies themselves and the KL "
            "column (a k1 estimate that assumes such samples) is only approximate.")


def _setup_section(run: RunFiles) -> str:
    parts = ["<h2>What was trained, on what, and for how long</h2>"]
    parts += [f"<p>{escape(s)}</p>" for s in _setup_sentences(run)]
    stage_seconds = run.summary.get("stage_seconds")
    stage_seconds = stage_seconds if isinstance(stage_seconds, dict) else {}
    wall = finite(run.summary.get("wall_seconds"))
    if stage_seconds or wall:
        total = wall or sum(v for v in map(finite, stage_seconds.values()) if v is not None) or None
        rows = [[escape(str(k)), _duration(v),
                 _num(finite(v) / total, ".0%") if total and finite(v) is not None else "—"]
                for k, v in stage_seconds.items()]
        rows.append(["<b>total (wall)</b>", _duration(total), ""])
        parts.append(_table(["stage", "time", "share of wall time"], rows, numeric=(1, 2)))
    if run.missing:
        items = "".join(f"<li><code>{escape(n)}</code>: {escape(what)}</li>"
                        for n, what in run.missing.items())
        parts.append(f'<div class="note">Not in this run (sections left out):<ul>{items}</ul></div>')
    if run.problems:
        items = "".join(f"<li>{escape(p)}</li>" for p in run.problems)
        parts.append(f'<div class="warn">Unreadable input:<ul>{items}</ul></div>')
    if isinstance(run.summary.get("config"), dict):
        rows = [[escape(k), escape(json.dumps(v))] for k, v in _flatten(run.summary["config"]).items()]
        parts.append(f"<details><summary>Full config</summary>{_table(['key', 'value'], rows)}</details>")
    return "\n".join(parts)


def _warnings_section(run: RunFiles, methods: dict, base: str | None) -> str:
    """The run's recorded warnings, else `checks.overoptimisation_warnings` for every method against `base`:
    its training rollouts when it has metrics (the online methods), its held-out statistics always."""
    recorded = isinstance(run.summary.get("warnings"), list)
    if recorded:
        warnings = run.summary["warnings"]
    else:
        names = [m for m in dict.fromkeys([*methods, *run.online_rows]) if m != base]
        warnings = [f"{method_label(name)}: {w}" for name in names
                    for w in overoptimisation_warnings(run.online_rows.get(name, []), _method(methods, base),
                                                       _method(methods, name), method=method_label(name))]
    source = "recorded by the run" if recorded else "computed from these files by rlhfkit.report.checks"
    if not warnings:
        return f'<h2>Warnings</h2><p class="ok">No over-optimisation warnings ({source}).</p>'
    items = "".join(f"<li>{escape(str(w))}</li>" for w in warnings)
    return (f'<h2>Warnings</h2><div class="warn"><b>Possible over-optimisation</b> ({source}):'
            f"<ul>{items}</ul></div>")


def _methods_table(methods: dict, base: str) -> str:
    rows = [[f"<b>{escape(name)}</b>" + (f" (β {m['beta']:g})" if m.get("beta") is not None else ""),
             f"{_num(m.get('gold_reward'))} {_ci(m.get('gold_reward_ci95'))}",
             _num(m.get("rm_reward")),
             f"{_num(m.get('kl'), '.2f')} {_ci(m.get('kl_ci95'), '.2f')}",
             _num(m.get("response_len"), ".1f"),
             f"{_num(m.get('win_rate_gold'), '.2f')} {_ci(m.get('win_rate_gold_ci95'), '.2f')}"]
            for name, m in methods.items() if isinstance(m, dict)]
    return _table(["method", "gold reward [95% CI]", "RM (proxy) reward", "KL nats [95% CI]",
                   "response length", f"gold win rate vs {base} [95% CI]"], rows, numeric=(1, 2, 3, 4, 5))


def _results_section(methods: dict, ev: dict, base: str, cand: str | None) -> str:
    parts = ["<h2>Held-out results</h2>"]
    if methods:
        parts.append(_methods_table(methods, base))
        parts.append(_figure(plots.reward_vs_kl_figure(methods),
                             "Gold reward vs √KL to the reference, one point per method (95% CI bars). "
                             "Up and to the left is better: more gold for less KL."))
    rows, policies = _eval_rows(ev), _eval_policies(ev)
    golds = {p: _values(rows, p, "gold_reward") for p in policies}
    if any(golds.values()):
        parts.append(_figure(plots.reward_histograms_figure({p: v for p, v in golds.items() if v}),
                             "Per-prompt gold reward on held-out prompts, one histogram per policy."))
    if cand:
        a, b = _paired(rows, base, cand, "gold_reward")
        if a:
            wins = sum(y > x for x, y in zip(a, b))
            fig = plots.improvement_figure([y - x for x, y in zip(a, b)], f"gold {cand} − {base}")
            parts.append(_figure(fig, f"Per-prompt gold change {cand} − {base}, sorted: "
                                      f"{wins} of {len(a)} prompts improved."))
    return "\n".join(parts) if len(parts) > 1 else ""


def _curves_section(run: RunFiles) -> str:
    parts = ["<h2>Training curves</h2>"]
    if run.rm_rows:
        parts.append(_figure(plots.rm_curves_figure(run.rm_rows),
                             "Reward model per epoch: Bradley–Terry loss and held-out accuracy "
                             "(vs the noisy labels)."))
    online = {method_label(m): rows for m, rows in run.online_rows.items() if rows}
    for label, rows in online.items():
        parts.append(_figure(plots.proxy_gold_figure(rows, title=f"{label} rollouts: proxy vs gold reward"),
                             f"{label} rollouts per step: the learned RM (proxy, left axis) and the gold "
                             "reward of the same samples (right axis). Proxy up while gold goes down = "
                             "over-optimising."))
    if online:
        steps = ("A step is one rollout batch (its size differs between methods)." if len(online) > 1 else "")
        kl = plots.methods_series_figure(online, "step", "rollout/kl", "KL to the reference (k1, sampled)",
                                         "nats per response")
        parts.append(_figure(kl, f"KL(policy ‖ reference) per step, one line per method. {steps}".strip()))
        length = plots.methods_series_figure(online, "step", "rollout/response_len", "Response length",
                                             "tokens")
        parts.append(_figure(length, f"Mean response length per step, one line per method. {steps}".strip()))
    return "\n".join(parts) if len(parts) > 1 else ""


def _samples_section(ev: dict) -> str:
    rows, policies = _eval_rows(ev), _eval_policies(ev)
    if not rows or not policies:
        return ""
    body = []
    for r in rows[:N_SAMPLES]:
        cells = [escape(str(r.get("prompt", "")))]
        for p in policies:
            e = _entry(r, p)
            cells.append(f"{escape(str(e.get('response', '—')))}"
                         f'<div class="score">gold {_num(e.get("gold_reward"))} · '
                         f'RM {_num(e.get("rm_reward"))}</div>')
        body.append(cells)
    return (f"<h2>Samples (first {len(body)} held-out prompts)</h2>"
            + _table(["prompt"] + [f"{p} response" for p in policies], body, cls="samples"))


def build_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report.html` from the run folder's files (see RUN_FILES) and return its path.

    Args:
        run_dir: a folder written by `rlhfkit demo` or `rlhfkit eval`; any of its files may be missing.
    Returns:
        The path of the written report.html (self-contained: inline CSS, plots as base64 PNG, no JS).
    Raises:
        DataError: `run_dir` is not a folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(str(run_dir), hint="not a folder; pass the output folder of `rlhfkit demo` or `eval`")
    run = read_run(run_dir)
    if not run.prefs and isinstance(run.summary.get("prefs"), dict):  # the demo copies it into summary.json
        run.prefs = run.summary["prefs"]
    # the evaluation's statistics: summary.json's copy (the demo adds each method's β) or eval.json's own
    methods = next((m for m in (run.summary.get("methods"), run.eval.get("methods")) if isinstance(m, dict)),
                   {})
    methods = {name: m for name, m in methods.items() if isinstance(m, dict)}
    baseline = run.summary.get("baseline") or run.eval.get("baseline")
    base, cand = pick_policies(_eval_policies(run.eval) or list(methods), baseline)
    rlhf = f"RLHF ({cand})" if cand else "RLHF"
    subheadline = _subheadline(run.summary, methods, base, cand)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [
        f"<h1>rlhfkit report: {escape(run_dir.resolve().name)}</h1>",
        f'<p class="meta">{escape(str(run_dir.resolve()))} · generated {stamp}</p>',
        f'<p class="headline">{escape(headline(methods, base, cand, rlhf))}</p>',
        f"<p>{escape(subheadline)}</p>" if subheadline else "",
        _setup_section(run),
        _warnings_section(run, methods, base),
        _results_section(methods, run.eval, base or "sft", cand),
        frontier_section(run.frontier, heading="Reward–KL frontier (rlhfkit frontier)",
                         link="frontier/frontier.html") if run.frontier else "",
        _curves_section(run),
        _samples_section(run.eval),
    ]
    out = run_dir / "report.html"
    write_page(out, f"rlhfkit report: {run_dir.resolve().name}", sections)
    log.info("wrote %s", out)
    return out
