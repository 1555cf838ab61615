"""The demo's stage bookkeeping: a stage reruns exactly when its own or an upstream setting changed."""

import dataclasses

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
    return {stage for stage in keys_a if keys_a[stage] != keys_b[stage]}


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
