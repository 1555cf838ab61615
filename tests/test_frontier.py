"""`rlhfkit frontier`: frontier.json assembly, Gao fits and over-optimisation notes on hand-made points; the
config and CLI; the sweep's stages (β replaced, resume, reuse of the demo's runs) with the training and
evaluation replaced by recorders; and one end-to-end sweep on tiny random models."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from rlhfkit import frontier
from rlhfkit.cli import COMMANDS, main
from rlhfkit.config import DemoConfig, FrontierConfig, build, save_config
from rlhfkit.demo import stage_keys
from rlhfkit.errors import DataError
from rlhfkit.frontier import Point, assemble_frontier, frontier_rows, gao_fits
from rlhfkit.report.checks import sweep_overoptimisation

# --- frontier.json assembly ---------------------------------------------------------------------------------


def stats(kl, gold, rm, **extra):
    """A `compare.summarize` entry with the figures a frontier row copies."""
    return {"kl": kl, "kl_ci95": [kl - 0.1, kl + 0.1], "gold_reward": gold,
            "gold_reward_ci95": [gold - 0.05, gold + 0.05], "rm_reward": rm,
            "rm_reward_ci95": [rm - 0.1, rm + 0.1],
            "response_len": 20.0, "eos_rate": 1.0, "n": 8, **extra}


def test_frontier_rows_copy_the_statistics_and_derive_sqrt_kl_and_rm_delta():
    methods = {"sft": stats(0.0, 0.10, 0.5),
               "ppo_0.1": stats(4.0, 0.30, 1.25, gold_delta=0.2, gold_delta_ci95=[0.1, 0.3]),
               "ppo_0.01": stats(-0.01, 0.05, 0.4, gold_delta=-0.05, gold_delta_ci95=[-0.1, 0.0])}
    bon = {"sft": stats(0.0, 0.12, 0.4), "bon_1": stats(0.0, 0.12, 0.4, gold_delta=0.0),
           "bon_16": stats(2.0, 0.2, 1.4, gold_delta=0.08), "bon_2": stats(0.5, 0.15, 0.7, gold_delta=0.03)}
    rows = frontier_rows([Point("ppo", 0.1), Point("ppo", 0.01)], methods, bon)
    assert [(r["method"], r.get("beta"), r.get("n")) for r in rows] == [
        ("ppo", 0.1, None), ("ppo", 0.01, None), ("bon", None, 1), ("bon", None, 2), ("bon", None, 16)]
    ppo = rows[0]
    assert ppo["sqrt_kl"] == 2.0 and ppo["name"] == "ppo_0.1" and ppo["label"] == "β 0.1"
    assert ppo["rm_delta"] == pytest.approx(1.25 - 0.5, abs=1e-12)  # against the trained points' SFT
    assert (ppo["gold_delta"], ppo["gold_delta_ci95"], ppo["kl_ci95"]) == (0.2, [0.1, 0.3], [3.9, 4.1])
    assert rows[1]["sqrt_kl"] == 0.0  # a k1 estimate of -0.01 nats is KL 0, not a math error
    assert rows[4]["rm_delta"] == pytest.approx(1.4 - 0.4, abs=1e-12)  # against best-of-n's own n = 1
    assert rows[4]["label"] == "n 16" and rows[4]["sqrt_kl"] == pytest.approx(math.sqrt(2.0))


def rl_points(method, alpha, beta, ds, proxy=(2.0, 0.0)):
    """Points exactly on R_RL(d) = d(α − β log d) for gold, and on (α', β') = proxy for the RM."""
    return [{"method": method, "sqrt_kl": d, "kl": d * d, "gold_delta": d * (alpha - beta * math.log(d)),
             "rm_delta": d * (proxy[0] - proxy[1] * math.log(d)), "label": f"β {i}"}
            for i, d in enumerate(ds)]


def test_gao_fits_recover_the_forms_and_skip_methods_without_two_points():
    # gold R_RL(d) = d(1 − 0.5 log d): d = 1 → 1, d = 2 → 2 − log 2 ≈ 1.3069, d = e → e/2 ≈ 1.3591
    ppo = rl_points("ppo", 1.0, 0.5, [1.0, 2.0, math.e])
    assert ppo[1]["gold_delta"] == pytest.approx(1.306853, abs=1e-6)
    # best-of-n R_bon(d) = d(0.8 − 0.2 d): d = 0.5 → 0.35, d = 1 → 0.6, d = 2 → 0.8
    bon = [{"method": "bon", "sqrt_kl": d, "kl": d * d, "gold_delta": g, "rm_delta": 2 * d, "label": f"n {i}"}
           for i, (d, g) in enumerate([(0.0, 0.0), (0.5, 0.35), (1.0, 0.6), (2.0, 0.8)])]
    lone = [{"method": "dpo", "sqrt_kl": s, "kl": s * s, "gold_delta": 0.1, "rm_delta": 0.1, "label": "β 1"}
            for s in (0.0, 1.5, 1.5)]  # one distinct d > 0
    fits = gao_fits(ppo + bon + lone)
    assert fits["ppo"]["form"] == "rl" and fits["bon"]["form"] == "bon"
    assert (fits["ppo"]["gold"]["alpha"], fits["ppo"]["gold"]["beta"]) == pytest.approx((1.0, 0.5), abs=1e-9)
    proxy = fits["ppo"]["proxy"]
    assert (proxy["alpha"], proxy["beta"]) == pytest.approx((2.0, 0.0), abs=1e-9)
    assert (fits["bon"]["gold"]["alpha"], fits["bon"]["gold"]["beta"]) == pytest.approx((0.8, 0.2), abs=1e-9)
    # the tabulated curve runs from d = 0 (R = 0) to the largest d, where it equals the data
    grid, curve = fits["ppo"]["sqrt_kl"], fits["ppo"]["gold"]["curve"]
    assert (grid[0], curve[0]) == (0.0, 0.0) and grid[-1] == pytest.approx(math.e)
    assert curve[-1] == pytest.approx(math.e / 2, abs=1e-9)
    assert fits["dpo"] == {"form": "rl", "skipped": "not fitted: needs 2 points with KL > 0, has 1"}


def test_gao_fits_skip_a_method_whose_points_sit_at_one_kl():
    """√KL 0.95 and 1.1 (< 1.25x apart): two parameters from one place; 0.95 and 1.2 (1.26x) are fitted."""
    close = gao_fits(rl_points("rloo", 1.0, 0.5, [0.95, 1.1]))["rloo"]
    assert close == {"form": "rl", "skipped": "not fitted: its points sit at one KL (√KL 0.95–1.10, less than "
                                              "a 1.25x spread)"}
    assert "gold" in gao_fits(rl_points("rloo", 1.0, 0.5, [0.95, 1.2]))["rloo"]


def test_sweep_notes_where_proxy_keeps_rising_while_gold_falls():
    ppo = [  # given out of KL order: the notes must follow KL, not the list
        {"method": "ppo", "label": "β 0.01", "kl": 8.0, "rm_delta": 1.2, "gold_delta": -0.1,
         "gold_delta_ci95": [-0.2, 0.0]},
        {"method": "ppo", "label": "β 0.3", "kl": 1.0, "rm_delta": 0.2, "gold_delta": 0.1},
        {"method": "ppo", "label": "β 0.03", "kl": 4.0, "rm_delta": 0.8, "gold_delta": 0.05},
        {"method": "ppo", "label": "β 0.1", "kl": 2.0, "rm_delta": 0.5, "gold_delta": 0.15},
    ]
    dpo = [{"method": "dpo", "label": "β 1", "kl": 1.0, "rm_delta": -0.1, "gold_delta": -0.1},  # both fall
           {"method": "dpo", "label": "β 0.1", "kl": 5.0, "rm_delta": 0.3, "gold_delta": 0.2},  # both rise
           {"method": "dpo", "label": "β 0.05", "kl": 6.0, "rm_delta": 0.5, "gold_delta": 0.2}]  # gold flat
    grpo = [{"method": "grpo", "label": "β 0", "kl": 3.0, "rm_delta": 0.3, "gold_delta": -0.02,
             "gold_delta_ci95": [-0.1, 0.06]}]  # from SFT: proxy up, gold down, but within the interval
    rloo = [{"method": "rloo", "label": f"β {b}", "kl": kl, "rm_delta": rm, "gold_delta": g}
            for b, kl, rm, g in ((0.2, 1.0, 0.3, -0.1), (0.05, 2.0, 0.2, -0.2), (0.01, 3.0, 0.4, -0.3))]
    notes = sweep_overoptimisation(ppo + dpo + grpo + rloo)
    assert [(n["method"], n["from"], n["to"]) for n in notes] == [
        ("ppo", "β 0.1", "β 0.01"),  # KL 2 → 4 → 8, one run: proxy 0.5 → 0.8 → 1.2, gold 0.15 → 0.05 → -0.1
        ("grpo", "SFT", "β 0"),
        ("rloo", "SFT", "β 0.2"), ("rloo", "β 0.05", "β 0.01"),  # broken where the proxy fell (0.3 → 0.2)
    ]
    first = notes[0]
    assert (first["kl_from"], first["kl_to"], first["proxy_from"], first["proxy_to"]) == (2.0, 8.0, 0.5, 1.2)
    assert (first["gold_from"], first["gold_to"], first["within_noise"]) == (0.15, -0.1, False)
    assert "+0.500 → +1.200" in first["text"] and "+0.150 → -0.100" in first["text"]
    assert notes[1]["within_noise"] and "possibly noise" in notes[1]["text"]


def test_assemble_frontier_is_json_with_points_fits_and_notes():
    methods = {"sft": stats(0.0, 0.1, 0.0), "ppo_0.1": stats(1.0, 0.2, 0.5, gold_delta=0.1),
               "ppo_0.01": stats(4.0, 0.05, 1.0, gold_delta=-0.05)}
    result = assemble_frontier([Point("ppo", 0.1), Point("ppo", 0.01)], methods, {}, n_eval_prompts=8)
    assert result["n_eval_prompts"] == 8 and result["baseline"] == {"trained": methods["sft"], "bon": None}
    assert [p["name"] for p in result["points"]] == ["ppo_0.1", "ppo_0.01"]
    assert set(result["fits"]) == {"ppo"} and "gold" in result["fits"]["ppo"]
    (note,) = result["overoptimisation"]  # KL 1 → 4: proxy 0.5 → 1.0, gold 0.1 → -0.05
    assert (note["from"], note["to"]) == ("β 0.1", "β 0.01")
    json.dumps(result, allow_nan=False)


# --- config and CLI ---------------------------------------------------------------------------------------


@pytest.fixture
def frontier_runs(monkeypatch):
    """Replace the frontier's run function by a recorder: a config that passes loading would start work."""
    ran = []
    monkeypatch.setitem(COMMANDS, "frontier", (FrontierConfig, ran.append, "frontier"))
    return ran


def test_defaults_sweep_three_or_more_betas_per_method_and_bon_to_64():
    cfg = build(FrontierConfig, {"demo": "runs/demo"})
    assert cfg.method_list == ["ppo", "dpo", "grpo", "rloo", "bon"] and cfg.bon_max_n == 64
    assert all(len(cfg.betas(m)) >= 3 for m in ("ppo", "dpo", "grpo", "rloo"))
    assert 0.0 in cfg.betas("grpo")  # GRPO without a KL term is a point of its sweep
    assert (cfg.steps, cfg.eval_prompts) == (None, None)  # the demo's own


def test_quick_is_a_preset_under_explicit_flags(tmp_path, frontier_runs):
    assert main(["frontier", "--demo", str(tmp_path), "--quick", "--ppo-kl-coef", "0.3,0.4"]) == 0
    (cfg,) = frontier_runs
    assert cfg.betas("ppo") == [0.3, 0.4] and cfg.betas("dpo") == [0.05, 1.0]  # the flag wins over the preset
    sizes = (cfg.steps, cfg.dpo_epochs, cfg.eval_prompts, cfg.eval_samples_per_prompt, cfg.bon_max_n)
    assert sizes == (2, 1, 4, 1, 4)
    assert all(len(cfg.betas(m)) == 2 for m in ("dpo", "grpo", "rloo"))


@pytest.mark.parametrize("flags, key", [
    (["--ppo-kl-coef", "0.1,abc"], "ppo_kl_coef"),
    (["--ppo-kl-coef", "0.1,0.1"], "ppo_kl_coef"),  # the same point twice
    (["--grpo-kl-coef=-0.1,0"], "grpo_kl_coef"),
    (["--rloo-kl-coef", "nan"], "rloo_kl_coef"),
    (["--dpo-beta", "0,0.1"], "dpo_beta"),  # DPO's β must be > 0
    (["--methods", "ppo,foo"], "methods"),
    (["--bon-max-n", "0"], "bon_max_n"),
    (["--steps", "0"], "steps"),
])
def test_bad_values_fail_at_load_naming_the_key(flags, key, tmp_path, frontier_runs, capsys):
    assert main(["frontier", "--demo", str(tmp_path), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhfkit frontier: error: config key '{key}'") and err.count("\n") == 1, err
    assert not frontier_runs


def test_a_method_left_out_is_not_checked_and_demo_is_required(tmp_path, frontier_runs, capsys):
    assert main(["frontier", "--demo", str(tmp_path), "--methods", "ppo,bon", "--dpo-beta", "0"]) == 0
    assert frontier_runs[0].method_list == ["ppo", "bon"]
    assert main(["frontier"]) == 2
    assert "missing required config key 'demo'" in capsys.readouterr().err


# --- the sweep's stages, with training and evaluation replaced by recorders -------------------------------


def fake_demo(run, **overrides) -> DemoConfig:
    """A demo folder as `rlhfkit demo` leaves it, as far as the frontier reads it: config.yaml and the
    prefs/rm markers with their keys, and a finished PPO stage at the demo's own β."""
    from rlhfkit.device import resolve_dtypes

    cfg = resolve_dtypes(build(DemoConfig, {"output": str(run), **overrides}))  # as `run_demo` saves it
    save_config(cfg, run / "config.yaml")
    keys = stage_keys(cfg, ["ppo"])
    for stage in ("prefs", "rm", "ppo"):
        (run / stage).mkdir(parents=True, exist_ok=True)
        (run / stage / "done.json").write_text(json.dumps({"result": {}, "seconds": 1.0, "key": keys[stage]}))
    (run / "ppo" / "policy").mkdir(exist_ok=True)
    return cfg


@pytest.fixture
def recorders(monkeypatch):
    """Training, the evaluation and best-of-n replaced: each records its call and returns statistics in which
    a smaller β gives more KL, more proxy and, past KL 4, less gold."""
    calls = {"train": [], "eval": [], "bon": []}

    def train(point_cfg, point, train_prompts, run, out):
        calls["train"].append((point, point_cfg))
        (out / "policy").mkdir(parents=True)
        return {"final": point.beta}

    def evaluate(eval_cfg, heldout, policies, rm_dir, out):
        calls["eval"].append((eval_cfg, dict(policies)))
        methods = {"sft": stats(0.0, 0.0, 0.0)}
        for name in list(policies)[1:]:
            kl = 8.0 if name.endswith("_0") else min(0.1 / float(name.rsplit("_", 1)[1]), 8.0)
            gold = 0.1 * kl if kl <= 4 else 0.4 - 0.1 * (kl - 4)
            methods[name] = stats(kl, gold, 0.2 * kl, gold_delta=gold,
                                  gold_delta_ci95=[gold - 0.01, gold + 0.01])
        return methods

    def best_of_n(demo_cfg, prompts, max_n, rm_dir, out):
        calls["bon"].append((len(prompts), max_n))
        bon = {f"bon_{n}": stats(math.log(n) - (n - 1) / n, 0.01 * n, 0.1 * n, gold_delta=0.01 * n)
               for n in (1, 2, 4)}
        return {"sft": stats(0.0, 0.0, 0.0), **bon}

    monkeypatch.setattr(frontier, "train_point", train)
    monkeypatch.setattr(frontier, "evaluate", evaluate)
    monkeypatch.setattr(frontier, "best_of_n", best_of_n)
    return calls


def test_sweep_trains_each_beta_once_reuses_the_demos_run_and_resumes(tmp_path, recorders):
    run = tmp_path / "demo"
    demo_cfg = fake_demo(run)
    cfg = build(FrontierConfig, {"demo": str(run), "methods": "ppo,dpo,grpo,bon", "bon_max_n": 4,
                                 "eval_prompts": 5})
    result = frontier.run_frontier(cfg)
    trained = {p.name: c for p, c in recorders["train"]}
    # PPO β 0.1 is the demo's own run (same settings): reused, not retrained
    assert set(trained) == {"ppo_0.01", "ppo_0.03", "dpo_0.05", "dpo_0.1", "dpo_1", "grpo_0", "grpo_0.02",
                            "grpo_0.1"}
    assert trained["ppo_0.03"].ppo.kl_coef == 0.03 and trained["ppo_0.03"].ppo.steps == demo_cfg.ppo.steps
    assert trained["dpo_1"].dpo.beta == 1.0 and trained["dpo_1"].ppo == demo_cfg.ppo  # only its own group
    assert trained["grpo_0"].grpo.kl_coef == 0.0
    (eval_cfg, policies), = recorders["eval"]  # every trained point in one evaluation
    assert eval_cfg.eval_prompts == 5 and eval_cfg.eval_samples_per_prompt == demo_cfg.eval_samples_per_prompt
    assert policies["sft"] == demo_cfg.policy and policies["ppo_0.1"] == str(run / "ppo" / "policy")
    assert policies["dpo_0.05"] == str(run / "frontier" / "dpo_0.05" / "policy") and len(policies) == 10
    assert recorders["bon"] == [(5, 4)]
    assert len(result["points"]) == 9 + 3 and set(result["fits"]) == {"ppo", "dpo", "grpo", "bon"}
    assert json.loads((run / "frontier" / "frontier.json").read_text()) == result
    # GRPO β 0: KL 8, less gold than β 0.02 at KL 5
    assert "Over-optimisation" in (run / "frontier" / "frontier.html").read_text()
    assert "Reward–KL frontier" in (run / "report.html").read_text().replace("&#8211;", "–")

    # a rerun skips every finished stage; a changed sweep trains only its new point
    result_again = frontier.run_frontier(cfg)
    assert len(recorders["train"]) == 8 and len(recorders["eval"]) == 1 and len(recorders["bon"]) == 1
    assert result_again["points"] == result["points"]
    frontier.run_frontier(dataclasses.replace(cfg, ppo_kl_coef="0.01,0.03,0.1,0.3"))
    assert [p.name for p, _ in recorders["train"][8:]] == ["ppo_0.3"] and len(recorders["eval"]) == 2


def test_an_interrupted_sweep_resumes_with_the_unfinished_points(tmp_path, recorders, monkeypatch):
    run = tmp_path / "demo"
    fake_demo(run)
    cfg = build(FrontierConfig, {"demo": str(run), "methods": "rloo", "steps": 3})
    record = frontier.train_point

    def crash_on_second(point_cfg, point, *rest):
        if point.beta == 0.05:
            raise KeyboardInterrupt
        return record(point_cfg, point, *rest)

    monkeypatch.setattr(frontier, "train_point", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        frontier.run_frontier(cfg)
    monkeypatch.setattr(frontier, "train_point", record)
    frontier.run_frontier(cfg)
    assert [p.name for p, _ in recorders["train"]] == ["rloo_0.01", "rloo_0.05", "rloo_0.2"]  # 0.01 once
    assert all(c.rloo.steps == 3 for _, c in recorders["train"])


def test_steps_override_means_the_demos_run_is_not_reused(tmp_path, recorders):
    run = tmp_path / "demo"
    fake_demo(run)
    frontier.run_frontier(build(FrontierConfig, {"demo": str(run), "methods": "ppo", "steps": 2,
                                                 "ppo_kl_coef": "0.1,0.2"}))
    assert [p.name for p, _ in recorders["train"]] == ["ppo_0.1", "ppo_0.2"]


def test_a_demo_without_its_rm_or_with_changed_settings_is_refused(tmp_path, recorders):
    run = tmp_path / "demo"
    fake_demo(run)
    (run / "rm" / "done.json").unlink()
    with pytest.raises(DataError, match=r"rm/done.json: missing: the demo's rm stage has not finished"):
        frontier.run_frontier(build(FrontierConfig, {"demo": str(run)}))
    fake_demo(run, rm_epochs=1)  # config.yaml says 1 epoch, the markers were made with it ...
    save_config(build(DemoConfig, {"output": str(run), "rm_epochs": 3}), run / "config.yaml")  # ... now 3
    with pytest.raises(DataError, match="made with other settings"):
        frontier.run_frontier(build(FrontierConfig, {"demo": str(run)}))
    assert not recorders["train"]


def test_the_cli_prints_the_points_and_the_notes(tmp_path, recorders, capsys):
    run = tmp_path / "demo"
    fake_demo(run)
    assert main(["-q", "frontier", "--demo", str(run), "--methods", "grpo", "--grpo-kl-coef", "0,0.1"]) == 0
    out = capsys.readouterr().out
    assert "grpo β 0.1: KL 1.00 nats, gold gain +0.100, RM gain +0.200" in out
    assert "over-optimisation: grpo: from β 0.1 (KL 1.00) to β 0 (KL 8.00)" in out
    assert f"{run}/frontier/frontier.html" in out


# --- end to end on tiny random models ----------------------------------------------------------------------


def tiny_demo(run, tiny_llama, tiny_bert) -> DemoConfig:
    """A finished demo's prefs and RM for tiny random models: a prompt file with a split, labelled pairs, an
    RM folder, and config.yaml with the markers' keys."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from rlhfkit.models.reward import RewardModel

    words = "the cat dog sun moon sea tree book".split()
    prompts = [{"prompt": f"{words[i % 8]} {words[(i * 3) % 8]}", "split": "train" if i < 12 else "heldout"}
               for i in range(16)]
    run.mkdir(parents=True)
    (run / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    pairs = [{"prompt": p["prompt"], "chosen": "good happy", "rejected": "bad sad"} for p in prompts[:8]]
    (run / "prefs").mkdir()
    for name, rows in (("prefs.jsonl", pairs[:6]), ("prefs_val.jsonl", pairs[6:])):
        (run / "prefs" / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    RewardModel(BertForSequenceClassification.from_pretrained(tiny_bert),
                AutoTokenizer.from_pretrained(tiny_bert)).save(run / "rm" / "model")
    groups = {f"{a}.{k}": v for a in ("ppo", "grpo") for k, v in (("dtype", "fp32"), ("batch_size", 2))}
    cfg = build(DemoConfig, {"output": str(run), "policy": tiny_llama, "prompts": str(run / "prompts.jsonl"),
                             "quick": True, "generation.max_new_tokens": 6,
                             "ppo.generation.max_new_tokens": 6, "grpo.generation.max_new_tokens": 6,
                             "dpo.dtype": "fp32", "dpo.batch_size": 2, "generation_batch_size": 8,
                             "ppo.num_minibatches": 1, **groups})
    save_config(cfg, run / "config.yaml")
    keys = stage_keys(cfg, [])
    for stage in ("prefs", "rm"):
        (run / stage / "done.json").write_text(json.dumps({"result": {}, "seconds": 1.0, "key": keys[stage]}))
    return cfg


def test_quick_sweep_end_to_end_on_tiny_models(tmp_path, tiny_llama, tiny_bert):
    run = tmp_path / "demo"
    tiny_demo(run, tiny_llama, tiny_bert)
    cfg = build(FrontierConfig, {"demo": str(run), "quick": True, "methods": "ppo,dpo,grpo,bon",
                                 "dpo_beta": "1", "grpo_kl_coef": "0", "eval_prompts": 3})
    result = frontier.run_frontier(cfg)
    out = run / "frontier"
    assert [(p["method"], p.get("beta", p.get("n"))) for p in result["points"]] == [
        ("ppo", 0.01), ("ppo", 0.1), ("dpo", 1.0), ("grpo", 0.0), ("bon", 1), ("bon", 2), ("bon", 4)]
    for name in ("ppo_0.01", "dpo_1", "grpo_0"):
        assert (out / name / "done.json").is_file() and (out / name / "policy" / "config.json").is_file()
    final = json.loads((out / "ppo_0.01" / "done.json").read_text())["result"]
    assert final["ppo/kl_coef"] == 0.01  # trained at the point's β
    bon = {p["n"]: p for p in result["points"] if p["method"] == "bon"}
    assert bon[1]["kl"] == 0.0 and bon[1]["gold_delta"] == 0.0
    assert bon[4]["kl"] == pytest.approx(math.log(4) - 0.75)
    # the RM's best of more samples scores at least as high (E[max] grows with n)
    assert bon[4]["rm_delta"] >= bon[2]["rm_delta"] - 1e-9 and bon[2]["rm_delta"] >= -1e-9
    ev = json.loads((out / "eval" / "eval.json").read_text())
    assert ev["policies"] == ["sft", "ppo_0.01", "ppo_0.1", "dpo_1", "grpo_0"]
    assert len(ev["rows"]) == 3  # every point on the same 3 held-out prompts
    assert {r["prompt"] for r in ev["rows"]} == {r["prompt"] for r in json.loads(
        (out / "bon" / "eval.json").read_text())["rows"]}
    assert (out / "frontier.html").is_file() and (run / "report.html").is_file()
