"""rlhfkit.eval.best_of_n: the unbiased best-of-n estimator, its analytic KL, eval rows, curve and command."""

import itertools
import json
import math

import numpy as np
import pytest

from rlhfkit.eval.best_of_n import best_of_n_rows, bon_expected, bon_points, bon_weights, curve_ns
from rlhfkit.eval.compare import ROW_KEYS, summarize
from rlhfkit.losses import bon_kl  # tested in tests/test_losses_critic_free.py


def brute_force(proxy, gold, n):
    """Mean over every n-subset of (proxy, gold) of its proxy-best; a tie for best is a uniform draw."""
    proxies, golds = [], []
    for subset in itertools.combinations(range(len(proxy)), n):
        top = max(proxy[i] for i in subset)
        tied = [i for i in subset if proxy[i] == top]
        proxies.append(top)
        golds.append(sum(gold[i] for i in tied) / len(tied))
    return sum(proxies) / len(proxies), sum(golds) / len(golds)


def test_hand_computed_n3():
    # ascending proxy: y1 (0.1, g 2), y2 (0.2, g 4), y0 (0.3, g 1); n = 2: C(3, 2) = 3,
    # weights C(j−1, 1)/3 = 0, 1/3, 2/3 -> proxy 0.2/3 + 0.3·2/3 = 0.26667, gold 4/3 + 1·2/3 = 2
    # (subsets {0,1} -> y0, {0,2} -> y0, {1,2} -> y2: gold (1 + 1 + 4)/3 = 2)
    proxy, gold = bon_expected([0.3, 0.1, 0.2], [1.0, 2.0, 4.0], 2)
    assert proxy == pytest.approx(0.8 / 3, abs=1e-12) and gold == pytest.approx(2.0, abs=1e-12)


@pytest.mark.parametrize("n, proxy, gold", [
    (1, 0.25, 2.5),  # the plain mean: (0.4 + 0.1 + 0.3 + 0.2)/4, (1 + 2 + 3 + 4)/4
    # ascending: y1 (0.1, 2), y3 (0.2, 4), y2 (0.3, 3), y0 (0.4, 1); C(4, 2) = 6, weights 0, 1/6, 2/6, 3/6
    (2, (0.2 + 2 * 0.3 + 3 * 0.4) / 6, (4 + 2 * 3 + 3 * 1) / 6),  # 0.33333, 2.16667
    (3, (0.3 + 3 * 0.4) / 4, (3 + 3 * 1) / 4),  # C(4, 3) = 4, weights 0, 0, 1/4, 3/4: 0.375, 1.5
    (4, 0.4, 1.0),  # the proxy's argmax
])
def test_hand_computed_n4(n, proxy, gold):
    got = bon_expected([0.4, 0.1, 0.3, 0.2], [1.0, 2.0, 3.0, 4.0], n)
    assert got == pytest.approx((proxy, gold), abs=1e-12)


def test_ties_share_their_ranks_weights():
    # proxy [0, 1, 1], gold [5, 0, 3], n = 2: {0,1} -> gold 0, {0,2} -> 3, {1,2} tie -> (0 + 3)/2 = 1.5;
    # mean 1.5. Breaking the tie by order would give (0 + 3 + 3)/3 = 2 or (0 + 3 + 0)/3 = 1.
    assert bon_weights([0.0, 1.0, 1.0], 2) == pytest.approx([0.0, 0.5, 0.5], abs=1e-12)
    assert bon_expected([0.0, 1.0, 1.0], [5.0, 0.0, 3.0], 2) == pytest.approx((1.0, 1.5), abs=1e-12)
    assert bon_expected([1.0, 1.0], [0.0, 2.0], 2)[1] == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_over_subsets(seed):
    rng = np.random.default_rng(seed)
    size = 7
    proxy = rng.integers(0, 4, size).astype(float).tolist()  # few distinct values: ties are common
    gold = rng.normal(size=size).tolist()
    for n in range(1, size + 1):
        assert bon_expected(proxy, gold, n) == pytest.approx(brute_force(proxy, gold, n), abs=1e-12), n
        assert bon_weights(proxy, n).sum() == pytest.approx(1.0, abs=1e-12)


def test_bad_n_and_scores_are_refused():
    with pytest.raises(ValueError, match="1 <= n <= N = 2"):
        bon_weights([0.0, 1.0], 3)
    with pytest.raises(ValueError, match="finite"):
        bon_weights([0.0, math.nan], 1)


def test_curve_ns():
    assert curve_ns(1) == [1]
    assert curve_ns(16) == [1, 2, 4, 8, 16]
    assert curve_ns(12) == [1, 2, 4, 8, 12]


def _samples():
    return [
        {"prompt": "p0", "responses": ["a", "b", "c", "d"], "rm_reward": [0.4, 0.1, 0.3, 0.2],
         "gold_reward": [1.0, 2.0, 3.0, 4.0], "response_len": [10, 20, 30, 40], "ended": [True, False, True, True]},
        {"prompt": "p1", "responses": ["e", "f", "g", "h"], "rm_reward": [0.0, 1.0, 2.0, 3.0],
         "gold_reward": [0.0, 0.0, 1.0, 1.0], "response_len": [4, 4, 8, 8], "ended": [True, True, False, False]},
    ]


def test_rows_follow_the_compare_schema_and_values():
    rows = best_of_n_rows(_samples(), 2)
    assert [set(r) for r in rows] == [{"prompt", "sft", "bon2"}] * 2
    sft, bon = rows[0]["sft"], rows[0]["bon2"]
    assert set(sft) == set(bon) == {*ROW_KEYS, "response"}
    # sft = n = 1: the mean of the 4 samples
    assert (sft["rm_reward"], sft["gold_reward"], sft["kl"], sft["response_len"], sft["eos_rate"]) == \
        pytest.approx((0.25, 2.5, 0.0, 25.0, 0.75), abs=1e-12)
    # bon2 of p0: weights by sample (y0, y1, y2, y3) = (3, 0, 2, 1)/6
    assert (bon["rm_reward"], bon["gold_reward"], bon["response_len"], bon["eos_rate"]) == pytest.approx(
        ((1.2 + 0.6 + 0.2) / 6, (3 + 6 + 4) / 6, (30 + 60 + 40) / 6, (3 + 2 + 1) / 6), abs=1e-12)
    assert bon["kl"] == pytest.approx(math.log(2) - 0.5, abs=1e-12)
    assert (sft["response"], bon["response"]) == ("a", "a")  # the first sample; the RM's best of the first 2
    # p1: proxy ascending in order, weights (0, 1, 2, 3)/6: gold (0 + 0 + 2 + 3)/6, best of the first 2 is "f"
    assert rows[1]["bon2"]["gold_reward"] == pytest.approx(5 / 6, abs=1e-12)
    assert rows[1]["bon2"]["response"] == "f"


def test_rows_summarize_like_any_policy():
    result = {"policies": ["sft", "bon2"], "rows": best_of_n_rows(_samples(), 2)}
    methods = summarize(result, baseline="sft")
    # per-prompt gold deltas: 13/6 − 2.5 = −1/3 and 5/6 − 1/2 = 1/3: mean 0
    assert methods["bon2"]["gold_delta"] == pytest.approx(0.0, abs=1e-12)
    assert methods["bon2"]["kl"] == pytest.approx(bon_kl(2), abs=1e-12)
    assert methods["bon2"]["rm_reward"] == pytest.approx(((2.0 / 6) + (0 + 1 + 4 + 9) / 6) / 2, abs=1e-12)


def test_rows_without_gold_leave_it_out():
    samples = [{**s, "gold_reward": None} for s in _samples()]
    rows = best_of_n_rows(samples, 4)
    assert rows[0]["bon4"]["gold_reward"] is None and rows[0]["bon4"]["rm_reward"] == 0.4


def test_curve_points_are_per_n_means():
    samples = _samples()
    proxy, gold = [s["rm_reward"] for s in samples], [s["gold_reward"] for s in samples]
    curve = bon_points(proxy, gold, seed=1)
    assert [p["n"] for p in curve] == [1, 2, 4]
    # n = 1: gold (2.5 + 0.5)/2 = 1.5; n = 2: (13/6 + 5/6)/2 = 1.5; n = 4: argmaxes y0 (gold 1) and y3 (1)
    assert [p["gold_reward"] for p in curve] == pytest.approx([1.5, 1.5, 1.0], abs=1e-12)
    assert [p["rm_reward"] for p in curve] == pytest.approx([(0.25 + 1.5) / 2, (2 / 6 + 14 / 6) / 2, 1.7],
                                                            abs=1e-12)
    assert [p["kl"] for p in curve] == [bon_kl(1), bon_kl(2), bon_kl(4)]
    low, high = curve[0]["gold_reward_ci95"]
    assert 0.5 <= low <= 1.5 <= high <= 2.5  # a bootstrap over the two prompts' means 2.5 and 0.5
    no_gold = bon_points(proxy, None, ns=[2])
    assert set(no_gold[0]) == {"n", "kl", "rm_reward", "rm_reward_ci95"}


@pytest.mark.parametrize("flags, key", [(["--n", "4", "--max-n", "2"], "max_n"), (["--n", "0"], "n")])
def test_bad_bon_config_fails_at_load(flags, key, tmp_path, capsys):
    from rlhfkit.cli import main

    out = tmp_path / "out"
    argv = ["bon", "--reward-model", "rm", "--prompts", "p.jsonl", "--output", str(out), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"rlhfkit bon: error: config key '{key}'") and err.count("\n") == 1, err
    assert not out.exists()


def test_bon_command_end_to_end(tiny_llama, tiny_bert, tmp_path):
    from rlhfkit.cli import main
    from rlhfkit.models.reward import RewardModel

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ("a good cat", "the sad dog", "write")))
    out = tmp_path / "bon"
    # 3 prompts × 4 samples in generate calls of 5 sequences: groups straddle the calls
    assert main(["bon", "--policy", tiny_llama, "--reward-model", tiny_bert, "--prompts", str(prompts),
                 "--output", str(out), "--n", "2", "--max-n", "4", "--batch-size", "5", "--dtype", "fp32",
                 "--generation.max-new-tokens", "4"]) == 0
    evaluation = json.loads((out / "eval" / "eval.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    samples = json.loads((out / "eval" / "bon_samples.json").read_text())
    assert evaluation["policies"] == ["sft", "bon2"] and evaluation["baseline"] == "sft"
    assert summary["methods"] == evaluation["methods"] and summary["samples_per_prompt"] == 4
    assert [p["n"] for p in summary["curve"]] == [1, 2, 4]
    assert [s["prompt"] for s in samples] == ["a good cat", "the sad dog", "write"]
    rm = RewardModel.from_pretrained(tiny_bert)
    for sample, row in zip(samples, evaluation["rows"]):
        assert len(sample["responses"]) == 4
        # each score belongs to its own (prompt, response): rescoring reproduces it
        assert sample["rm_reward"] == pytest.approx(rm.score([sample["prompt"]] * 4, sample["responses"]),
                                                    abs=1e-5)
        expected = bon_expected(sample["rm_reward"], sample["gold_reward"], 2)
        assert (row["bon2"]["rm_reward"], row["bon2"]["gold_reward"]) == pytest.approx(expected, abs=1e-12)
        assert row["sft"]["gold_reward"] == pytest.approx(np.mean(sample["gold_reward"]), abs=1e-12)
    n1 = summary["curve"][0]
    assert n1["gold_reward"] == pytest.approx(evaluation["methods"]["sft"]["gold_reward"], abs=1e-12)
    assert summary["curve"][1]["gold_reward"] == pytest.approx(evaluation["methods"]["bon2"]["gold_reward"],
                                                               abs=1e-12)
    assert "bon2" in (out / "report.html").read_text()
    assert (out / "config.yaml").is_file()
