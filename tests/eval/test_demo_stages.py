"""The demo's stage bookkeeping: a stage reruns exactly when its own or an upstream setting changed."""

import dataclasses

import pytest

from rlhfkit import demo
from rlhfkit.config import DemoConfig
from rlhfkit.demo import run_stage, stage_keys


def test_run_stage_skips_same_key_reruns_changed_key_or_force(tmp_path):
    calls = []

    def fn():
        calls.append(1)
        return {"n": len(calls)}

    timings = {}
    assert run_stage("s", tmp_path, False, fn, timings, "a") == {"n": 1}
    assert run_stage("s", tmp_path, False, fn, timings, "a") == {"n": 1}  # skipped: the stored result
    assert len(calls) == 1 and "s" in timings
    assert run_stage("s", tmp_path, False, fn, timings, "b") == {"n": 2}  # settings changed
    assert run_stage("s", tmp_path, True, fn, timings, "b") == {"n": 3}  # --force
    assert len(calls) == 3


def changed(keys_a: dict, keys_b: dict) -> set[str]:
    """The stages both runs have whose settings differ."""
    return {stage for stage in keys_a if stage in keys_b and keys_a[stage] != keys_b[stage]}


def test_a_change_reruns_its_stage_and_what_reads_it_only():
    base = DemoConfig()
    keys = stage_keys(base, ["ppo", "dpo"])
    dpo_lr = dataclasses.replace(base, dpo=dataclasses.replace(base.dpo, optim=dataclasses.replace(
        base.dpo.optim, lr=5e-5)))
    assert changed(keys, stage_keys(dpo_lr, ["ppo", "dpo"])) == {"dpo", "eval"}
    assert changed(keys, stage_keys(dataclasses.replace(base, rm_epochs=3), ["ppo", "dpo"])) == {"rm", "ppo", "eval"}
    assert changed(keys, stage_keys(dataclasses.replace(base, min_gold_gap=0.1), ["ppo", "dpo"])) == \
        {"prefs", "rm", "ppo", "dpo", "eval"}
    assert changed(keys, stage_keys(base, ["ppo"])) == {"eval"}  # a method more or less: only the comparison
    assert changed(keys, stage_keys(dataclasses.replace(base, eval_prompts=30), ["ppo", "dpo"])) == {"eval"}
    assert stage_keys(DemoConfig(), ["ppo", "dpo"]) == keys  # deterministic


def test_ppo_stage_passes_the_train_prompts_in_memory(tmp_path, monkeypatch):
    import rlhfkit.trainers.ppo as ppo

    calls = []
    monkeypatch.setattr(ppo, "train_ppo", lambda cfg, **kw: calls.append((cfg, kw)) or {})
    cfg = DemoConfig(output=str(tmp_path))
    train = ["first prompt", [{"role": "user", "content": "a chat prompt"}]]
    demo.run_online(cfg, "ppo", train, tmp_path / "rm", tmp_path / "ppo")
    (ppo_cfg, kw), = calls
    assert kw["prompts"] is train and ppo_cfg.prompts is None  # nothing to re-read
    assert (ppo_cfg.reward_model, ppo_cfg.output) == (str(tmp_path / "rm"), str(tmp_path / "ppo"))
    assert list(tmp_path.iterdir()) == []  # no prompts_train.jsonl written
    resolved = demo.resolved_config(cfg)["ppo"]
    assert resolved["prompts"] is None and resolved["output"] == str(tmp_path / "ppo")


def test_train_ppo_takes_prompts_instead_of_a_file(tmp_path):
    from rlhfkit.config import PPOConfig
    from rlhfkit.errors import ConfigError, DataError
    from rlhfkit.trainers.ppo import train_ppo

    cfg = PPOConfig(output=str(tmp_path / "out"), reward_model="rm", dtype="fp32")  # prompts: None
    with pytest.raises(DataError, match="2 prompts, fewer than --batch-size 8"):  # the list was used
        train_ppo(cfg, prompts=["a", "b"])
    with pytest.raises(ConfigError, match="'prompts'"):  # neither a file nor a list
        train_ppo(cfg)


def test_demo_groups_have_no_placeholders():
    cfg = DemoConfig()
    assert (cfg.ppo.prompts, cfg.ppo.output, cfg.ppo.reward_model, cfg.dpo.data, cfg.dpo.output) == (None,) * 5
