"""rlhfkit.eval.compare: the one producer of held-out statistics, with one name per figure."""

import json

import pytest

from rlhfkit.eval import stats
from rlhfkit.eval.compare import ROW_KEYS, save_evaluation, summarize


def _result():
    """4 prompts, baseline `sft` and candidate `ppo`; no reward model (rm_reward None)."""
    sft_gold, ppo_gold = [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 3.0, 2.0]
    rows = [{"prompt": f"p{i}",
             "sft": {"response": "a", "gold_reward": sft_gold[i], "rm_reward": None, "kl": 0.0,
                     "response_len": 10.0, "eos_rate": 1.0},
             "ppo": {"response": "b", "gold_reward": ppo_gold[i], "rm_reward": None, "kl": float(i + 1),
                     "response_len": 8.0 + 2 * i, "eos_rate": 0.5 * (i % 2)}}
            for i in range(4)]
    return {"policies": ["sft", "ppo"], "rows": rows}, sft_gold, ppo_gold


def test_summarize_names_each_figure_as_the_rows_do():
    result, sft_gold, ppo_gold = _result()
    methods = summarize(result, baseline="sft", seed=3)
    per_row = {"gold_reward", "gold_reward_ci95", "kl", "kl_ci95", "response_len", "eos_rate", "n"}
    assert set(methods["sft"]) == per_row  # rm_reward was not scored: left out, not null
    assert set(methods["ppo"]) == per_row | {"gold_delta", "gold_delta_ci95", "win_rate_gold",
                                             "win_rate_gold_ci95"}
    assert set(ROW_KEYS) - {"rm_reward"} <= set(methods["ppo"])
    ppo = methods["ppo"]
    # means: gold (1 + 1 + 3 + 2) / 4 = 1.75; kl (1 + 2 + 3 + 4) / 4 = 2.5; length (8 + 10 + 12 + 14) / 4 = 11
    assert (ppo["gold_reward"], ppo["kl"], ppo["response_len"], ppo["eos_rate"]) == (1.75, 2.5, 11.0, 0.25)
    assert methods["sft"]["gold_reward"] == 1.5 and methods["sft"]["n"] == 4
    # paired differences [1, 0, 1, -1]: Δ = 0.25; wins, tie, win, loss: (1 + ½ + 1 + 0) / 4 = 0.625
    assert ppo["gold_delta"] == pytest.approx(0.25, abs=1e-12)
    assert ppo["win_rate_gold"] == pytest.approx(0.625, abs=1e-12)
    assert ppo["gold_delta_ci95"] == list(stats.paired_bootstrap_diff(sft_gold, ppo_gold, seed=3)[1:])
    assert ppo["gold_reward_ci95"] == list(stats.bootstrap_ci(ppo_gold, seed=3)[1:])


def test_save_evaluation_writes_rows_and_the_statistics_it_returns(tmp_path):
    result, _, _ = _result()
    methods = save_evaluation(tmp_path / "eval.json", result, baseline="sft", seed=0)
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["methods"] == methods and saved["baseline"] == "sft"
    assert saved["rows"] == result["rows"] and saved["policies"] == ["sft", "ppo"]
