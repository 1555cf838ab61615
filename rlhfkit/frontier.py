"""`rlhfkit frontier`: the reward–KL frontier (ALGORITHMS.md §10) on one finished demo's preferences and RM.

Each method's KL strength β is swept (PPO, GRPO, RLOO, REINFORCE++: kl_coef; DPO: beta), one training run
per value, each a stage with a done.json marker (`demo.run_stage`), so an interrupted sweep resumes and
finished points are skipped; a point the demo itself trained with the same settings is reused. Best-of-n
from the SFT policy adds points at the analytic KL log n − (n−1)/n without training. Every trained point is
evaluated in one call of the demo's own held-out evaluation (`demo.evaluate`: same prompts, gold, proxy and
k1 sequence KL for all), best-of-n by `eval.best_of_n` on the same prompts with the same gold and proxy.
frontier.json holds one row per point (copied from those evaluations' statistics), Gao et al.'s fitted forms
per method (`eval.scaling`) and the over-optimisation notes (`report.checks`); frontier.html draws them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhfkit.atomic import write_text
from rlhfkit.config import DemoConfig, FrontierConfig, build, load_yaml, save_config, to_dict
from rlhfkit.demo import EVAL_VERSION, evaluate, run_dpo, run_online, run_stage, split_prompts, stage_keys
from rlhfkit.device import resolve_dtypes
from rlhfkit.errors import ConfigError, DataError
from rlhfkit.eval import gold
from rlhfkit.eval.best_of_n import BASELINE, best_of_n_rows, curve_ns, sample_and_score
from rlhfkit.eval.compare import save_evaluation
from rlhfkit.eval.scaling import bon_curve, fit_bon, fit_rl, rl_curve
from rlhfkit.models.reward import RewardModel
from rlhfkit.report.checks import sweep_overoptimisation
from rlhfkit.tracking import progress
from rlhfkit.trainers import loop

log = logging.getLogger(__name__)

MIN_SPREAD = 1.25  # a method's points are fitted only when their √KL spread at least this factor
FIT_GRID = 50  # √KL values at which frontier.json tabulates each fitted curve for the chart
# the per-method statistics of `compare.summarize` that a frontier row copies
ROW_FIGURES = ("kl", "kl_ci95", "gold_reward", "gold_reward_ci95", "rm_reward", "rm_reward_ci95",
               "gold_delta", "gold_delta_ci95", "win_rate_gold", "win_rate_gold_ci95", "response_len",
               "eos_rate")


@dataclass(frozen=True)
class Point:
    """One trained point of the sweep: `method` trained with KL strength `beta`."""

    method: str
    beta: float

    @property
    def name(self) -> str:
        """Its stage folder and policy name in eval.json, e.g. "ppo_0.05"."""
        return f"{self.method}_{self.beta:g}"


def load_demo(run: Path) -> DemoConfig:
    """The finished demo's config (its config.yaml, with `output` = `run`), once its preferences and reward
    model are checked to exist and to have been made with these settings (their done.json keys)."""
    path = run / "config.yaml"
    if not path.is_file():
        raise ConfigError(f"config key 'demo': {run} has no config.yaml; pass the output folder of a "
                          "finished `rlhfkit demo`")
    try:
        demo_cfg = build(DemoConfig, {**load_yaml(str(path)), "output": str(run), "force": False})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    keys = stage_keys(demo_cfg, [])
    for stage in ("prefs", "rm"):
        marker = run / stage / "done.json"
        if not marker.is_file():
            raise DataError(str(marker), hint=f"missing: the demo's {stage} stage has not finished; run "
                                              f"`rlhfkit demo --output {run}` first")
        if json.loads(marker.read_text()).get("key") != keys[stage]:
            raise DataError(str(marker), hint=f"made with other settings than {path}; rerun "
                                              f"`rlhfkit demo --output {run}` so that they match")
    return demo_cfg


def point_config(demo_cfg: DemoConfig, point: Point, cfg: FrontierConfig) -> DemoConfig:
    """The demo's config with `point.method`'s group at β = `point.beta` (and the sweep's steps or epochs).

    A fixed β per point: PPO's adaptive β (target_kl) is switched off, or every point would end at one KL."""
    group = getattr(demo_cfg, point.method)
    if point.method == "dpo":
        group = dataclasses.replace(group, beta=point.beta, epochs=cfg.dpo_epochs or group.epochs)
    else:
        group = dataclasses.replace(group, kl_coef=point.beta, steps=cfg.steps or group.steps, target_kl=None)
    return dataclasses.replace(demo_cfg, **{point.method: group})


def train_point(point_cfg: DemoConfig, point: Point, train_prompts: list, run: Path, out: Path) -> dict:
    """Train one point with the demo's stage functions: DPO on the demo's pairs, the others against its RM."""
    if point.method == "dpo":
        return run_dpo(point_cfg, run / "prefs", out)
    return run_online(point_cfg, point.method, train_prompts, run / "rm", out)


def demo_policy(run: Path, method: str, key: str) -> Path | None:
    """The demo's own `method` policy when the demo trained it with exactly the point's settings (same
    stage key), else None."""
    marker, policy = run / method / "done.json", run / method / "policy"
    if marker.is_file() and json.loads(marker.read_text()).get("key") == key and policy.is_dir():
        return policy
    return None


def train_or_reuse(cfg: FrontierConfig, demo_cfg: DemoConfig, point: Point, train_prompts: list,
                   stage) -> tuple[str, str]:
    """The point's policy folder and stage key: the demo's own run when it has the same settings, else this
    sweep's stage (trained unless its done.json holds the same key). `stage(name, fn, key)` runs a stage."""
    run, out = Path(cfg.demo), Path(cfg.output_dir)
    point_cfg = point_config(demo_cfg, point, cfg)
    key = stage_keys(point_cfg, [point.method])[point.method]
    reused = None if cfg.force else demo_policy(run, point.method, key)
    if reused is not None:
        log.info("frontier: %s is the demo's own %s run (same settings), reused", point.name, point.method)
        return str(reused), key
    stage(point.name, lambda: train_point(point_cfg, point, train_prompts, run, out / point.name), key)
    return str(out / point.name / "policy"), key


def best_of_n(demo_cfg: DemoConfig, prompts: list, max_n: int, rm_dir: Path, out: Path) -> dict:
    """Stage: max_n SFT samples per held-out prompt scored by the RM (proxy) and gold; out/eval.json holds the
    rows of "sft" (n = 1) and "bon_<n>" for n = 1, 2, 4, ..., max_n. Returns their per-method statistics."""
    samples = sample_and_score(demo_cfg.policy, prompts, demo_cfg.generation,
                               reward_model=RewardModel.from_pretrained(rm_dir), num_samples=max_n,
                               gold=gold.gold_rewards, batch_size=demo_cfg.generation_batch_size,
                               seed=demo_cfg.seed, bf16=demo_cfg.ppo.dtype == "bf16")
    write_text(out / "bon_samples.json", json.dumps(samples))
    ns = curve_ns(max_n)
    rows = [{"prompt": s["prompt"]} for s in samples]
    for n in ns:
        for row, bon_row in zip(rows, best_of_n_rows(samples, n, f"bon_{n}")):
            row.update(bon_row)
    sampler = {k: getattr(demo_cfg.generation, k)
               for k in ("temperature", "top_p", "top_k", "max_new_tokens")}
    result = {"policies": [BASELINE] + [f"bon_{n}" for n in ns], "rows": rows, "sampler": sampler}
    return save_evaluation(out / "eval.json", result, baseline=BASELINE, seed=demo_cfg.seed)


def frontier_rows(points: list[Point], methods: dict[str, dict], bon: dict[str, dict]) -> list[dict]:
    """One row per point: the evaluation's statistics (ROW_FIGURES) plus method, beta or n, name, label,
    sqrt_kl = √max(kl, 0) (a k1 estimate can dip below 0) and rm_delta = rm_reward − the baseline's.

    Args:
        points: the trained points, whose statistics are `methods[point.name]` against `methods["sft"]`.
        bon: best-of-n statistics, "bon_<n>" against "sft" (n = 1 over the same samples); {} if not run.
    """
    rows = [_row(p.method, {"beta": p.beta}, p.name, methods[p.name], methods["sft"]) for p in points]
    bon_names = sorted((name for name in bon if name != BASELINE), key=lambda name: int(name.split("_")[1]))
    rows += [_row("bon", {"n": int(name.split("_")[1])}, name, bon[name], bon[BASELINE])
             for name in bon_names]
    return rows


def _row(method: str, knob: dict, name: str, stats: dict, baseline: dict) -> dict:
    label = f"β {knob['beta']:g}" if "beta" in knob else f"n {knob['n']}"
    return {"method": method, **knob, "name": name, "label": label,
            "sqrt_kl": math.sqrt(max(stats["kl"], 0.0)), **{k: stats[k] for k in ROW_FIGURES if k in stats},
            "rm_delta": stats["rm_reward"] - baseline["rm_reward"]}


def gao_fits(rows: list[dict]) -> dict[str, dict]:
    """Per method, Gao et al.'s form fitted to gold_delta and to rm_delta against sqrt_kl: R_RL for the
    trained methods, R_bon for best-of-n (ALGORITHMS.md §10, `eval.scaling`), tabulated on FIT_GRID points.

    Returns {method: {"form": "rl"|"bon", "n_points", "sqrt_kl": [grid], "gold"|"proxy": {"alpha", "beta",
    "curve": [R at the grid]}}}, or {"form", "skipped": reason} with fewer than 2 distinct √KL > 0 or when the
    largest √KL is less than MIN_SPREAD times the smallest (measured: RLOO β 0.01 / 0.05 / 0.2 all ended at
    KL 0.90–0.94, and the fit through them swung to −1.4 between 0 and its points)."""
    fits = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        points = [r for r in rows if r["method"] == method]
        form, fit, curve = ("bon", fit_bon, bon_curve) if method == "bon" else ("rl", fit_rl, rl_curve)
        d = [r["sqrt_kl"] for r in points]
        informative = sorted({x for x in d if x > 0})
        if len(informative) < 2:
            fits[method] = {"form": form,
                            "skipped": f"not fitted: needs 2 points with KL > 0, has {len(informative)}"}
            continue
        if informative[-1] < MIN_SPREAD * informative[0]:  # two parameters from one √KL: the curve is arbitrary
            fits[method] = {"form": form, "skipped": f"not fitted: its points sit at one KL (√KL "
                            f"{informative[0]:.2f}–{informative[-1]:.2f}, less than a {MIN_SPREAD}x spread)"}
            continue
        grid = np.linspace(0.0, max(d), FIT_GRID)  # [FIT_GRID]
        entry = {"form": form, "n_points": len(points), "sqrt_kl": grid.tolist()}
        for target, key in (("gold", "gold_delta"), ("proxy", "rm_delta")):
            alpha, beta = fit(d, [r[key] for r in points])
            entry[target] = {"alpha": alpha, "beta": beta, "curve": curve(grid, alpha, beta).tolist()}
        fits[method] = entry
    return fits


def assemble_frontier(points: list[Point], methods: dict, bon: dict, **about) -> dict:
    """frontier.json: `about` (settings, sizes), the points, the fits and the over-optimisation notes."""
    rows = frontier_rows(points, methods, bon)
    fits = gao_fits(rows)
    for method, fit in fits.items():
        if "skipped" in fit:
            log.warning("frontier: %s %s", method, fit["skipped"])
    return {**about, "baseline": {"trained": methods.get("sft"), "bon": bon.get(BASELINE)}, "points": rows,
            "fits": fits, "overoptimisation": sweep_overoptimisation(rows)}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_frontier(cfg: FrontierConfig) -> dict:
    """Train the points (resumable stages), evaluate them and best-of-n, write frontier.json and frontier.html
    (and the demo's report.html again, which links to it when it is in DEMO/frontier).

    Returns: frontier.json's content."""
    run = Path(cfg.demo)
    demo_cfg = resolve_dtypes(load_demo(run))  # a demo saved before `auto` was resolved: this machine's
    out = Path(cfg.output_dir)
    save_config(cfg, out / "config.yaml")
    loop.seed_everything(demo_cfg.seed)
    train_prompts, heldout = split_prompts(demo_cfg)
    eval_cfg = dataclasses.replace(
        demo_cfg, eval_prompts=cfg.eval_prompts or demo_cfg.eval_prompts,
        eval_samples_per_prompt=cfg.eval_samples_per_prompt or demo_cfg.eval_samples_per_prompt)
    prompts = heldout[: eval_cfg.eval_prompts]
    points = [Point(m, b) for m in cfg.method_list if m != "bon" for b in cfg.betas(m)]
    has_bon = "bon" in cfg.method_list
    log.info("frontier: %d training runs, one evaluation of them on %d held-out prompts%s; the full sweep "
             "takes an hour or more on 2 CPU cores", len(points), len(prompts),
             f", best-of-n up to n = {cfg.bon_max_n}" if has_bon else "")
    timings: dict[str, float] = {}
    stage = lambda name, fn, key: run_stage(name, out, cfg.force, fn, timings, key)  # noqa: E731
    bar = progress(total=len(points) + 2, desc="frontier points")
    policies, point_keys = {"sft": demo_cfg.policy}, {}
    for point in points:
        policies[point.name], point_keys[point.name] = train_or_reuse(cfg, demo_cfg, point, train_prompts,
                                                                      stage)
        bar.update()
    rm_key = stage_keys(demo_cfg, [])["rm"]
    sampling = [demo_cfg.policy, demo_cfg.seed, to_dict(demo_cfg.generation), demo_cfg.generation_batch_size,
                demo_cfg.ppo.dtype, len(prompts)]
    methods = stage("eval", lambda: evaluate(eval_cfg, heldout, policies, run / "rm", out / "eval"),
                    _digest([rm_key, sampling, point_keys, policies, eval_cfg.eval_samples_per_prompt,
                             EVAL_VERSION])) \
        if points else {}
    bar.update()
    bon = stage("bon", lambda: best_of_n(demo_cfg, prompts, cfg.bon_max_n, run / "rm", out / "bon"),
                _digest([rm_key, sampling, cfg.bon_max_n])) if has_bon else {}
    bar.update()
    bar.close()
    frontier = assemble_frontier(
        points, methods, bon, demo=str(run), n_eval_prompts=len(prompts),
        eval_samples_per_prompt=eval_cfg.eval_samples_per_prompt,
        bon_samples_per_prompt=cfg.bon_max_n if has_bon else None,
        kl="k1 sequence KL to the SFT policy, sampled (trained points); log n − (n−1)/n (best-of-n)",
        stage_seconds=timings, config=to_dict(cfg))
    write_text(out / "frontier.json", json.dumps(frontier, indent=2))
    from rlhfkit.report.frontier_page import build_frontier_report
    from rlhfkit.report.html import build_report

    build_frontier_report(out)
    if out.resolve() == (run / "frontier").resolve():
        build_report(run)
    return frontier
