"""Tests for rlhfkit.report: the HTML report from a hand-made run folder, and the over-optimisation checks."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from rlhfkit.errors import DataError
from rlhfkit.eval.compare import save_evaluation
from rlhfkit.report.checks import first_last_thirds, overoptimisation_warnings
from rlhfkit.report.html import build_report

SCRIPT = "<script>alert('x')</script>"


def _ppo_rows(score, gold, kl=None, length=None):
    """metrics.jsonl rows, one per step, from per-step lists (None where a list is not given)."""
    n = len(score)
    kl, length = kl or [1.0] * n, length or [20.0] * n
    return [{"step": i + 1, "rollout/score_mean": score[i], "rollout/gold_mean": gold[i], "rollout/kl": kl[i],
             "rollout/response_len": length[i], "ppo/kl_coef": 0.1, "step_time_s": 2.0} for i in range(n)]


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _eval(n_prompts=10):
    """eval/eval.json's rows (no statistics): SFT gold = 0.1·i; PPO gold = 0.1·i + 0.2, except -0.3 on the
    last prompt; PPO's first response is a <script> tag."""
    rows = []
    for i in range(n_prompts):
        ppo_gold = 0.1 * i + (0.2 if i < n_prompts - 1 else -0.3)
        row = {"prompt": f"prompt {i} & friends",
               "sft": {"response": f"sft answer {i}", "gold_reward": 0.1 * i, "rm_reward": 0.0, "kl": 0.0,
                       "response_len": 10, "eos_rate": 1.0},
               "ppo": {"response": SCRIPT if i == 0 else f"ppo answer {i}", "gold_reward": ppo_gold,
                       "rm_reward": 1.0, "kl": 2.0 + 0.1 * i, "response_len": 12, "eos_rate": 0.5}}
        rows.append(row)
    return {"policies": ["sft", "ppo"], "rows": rows}


@pytest.fixture
def full_run(tmp_path):
    run = tmp_path / "run"
    methods = {
        "sft": {"gold_reward": 0.123, "gold_reward_ci95": [0.05, 0.2], "rm_reward": 0.0, "kl": 0.0,
                "kl_ci95": [0.0, 0.0], "response_len": 10.0},
        "ppo": {"gold_reward": 0.456, "gold_reward_ci95": [0.4, 0.5], "rm_reward": 1.0, "kl": 2.5,
                "kl_ci95": [2.1, 2.9], "response_len": 12.0, "win_rate_gold": 0.9,
                "win_rate_gold_ci95": [0.7, 1.0], "gold_delta": 0.333, "gold_delta_ci95": [0.211, 0.444],
                "beta": 0.1},
    }
    _write_json(run / "summary.json", {
        "gold_reward_sft": 0.123, "gold_reward_rlhf": 0.456, "gold_delta_ci95": [0.211, 0.444],
        "rm_reward_sft": 0.0, "rm_reward_rlhf": 1.0, "kl_rlhf": 2.5, "win_rate_gold": 0.9,
        "win_rate_gold_ci95": [0.7, 1.0], "rm_val_accuracy": 0.81, "rm_val_gold_accuracy": 0.77,
        "wall_seconds": 600.0, "stage_seconds": {"prefs": 60.0, "rm": 120.0, "ppo": 360.0, "eval": 60.0},
        "config": {"policy": "smollm2-135m-instruct", "rm": {"base": "minilm-l6", "epochs": 2}},
        "methods": methods,
    })
    _write_json(run / "prefs" / "summary.json", {"n_prompts": 50, "k": 4, "n_pairs": 300,
                                                 "label_temperature": 0.5, "gold_agreement": 0.83})
    _write_jsonl(run / "rm" / "metrics.jsonl", [
        {"step": 10 * e, "epoch": e, "train/loss": 0.7 - 0.1 * e, "eval_loss": 0.7 - 0.05 * e,
         "eval_accuracy": 0.6 + 0.1 * e} for e in (1, 2)])
    _write_jsonl(run / "ppo" / "metrics.jsonl", _ppo_rows([0.1, 0.2, None, 0.4, 0.5, 0.6],
                                                         [0.1, 0.15, 0.2, 0.25, 0.3, 0.35]))
    _write_json(run / "eval" / "eval.json", _eval())
    return run


# --- build_report ------------------------------------------------------------------------------------------


def test_report_has_headline_plots_and_escaped_samples(full_run):
    out = build_report(full_run)
    assert out == full_run / "report.html"
    html = out.read_text()
    # headline: the methods' numbers from summary.json (not eval.json's rows), in one sentence near the top
    headline = re.search(r'<p class="headline">(.*?)</p>', html).group(1)
    for number in ("0.123", "0.456", "+0.333", "[0.211, 0.444]", "KL = 2.50 nats", "0.90 [0.70, 1.00]"):
        assert number in headline, number
    assert "raised" in headline
    assert html.index('class="headline"') < html.index("What was trained") < html.index("Warnings")
    assert html.index("Warnings") < html.index("Held-out results") < html.index("Samples")
    # setup: preference data, models from the config, stage timings
    assert "300 pairs" in html and "minilm-l6" in html and "6 min 00 s" in html and "10 min 00 s" in html
    assert "final held-out accuracy 0.80" in html  # rm/metrics.jsonl's eval_accuracy of the last epoch
    # plots: methods reward-vs-KL, histograms, per-prompt change, RM curves, proxy/gold, KL, length
    assert html.count('<img src="data:image/png;base64,') == 7
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # samples: escaped, never live markup
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "prompt 0 &amp; friends" in html
    assert "No over-optimisation warnings" in html  # proxy and gold both rise, short KL, gold CI above 0
    assert "<b>ppo</b> (&#946; 0.1)" in html and "<b>sft</b></td>" in html  # the methods table names each β


def test_report_shows_recorded_warnings_in_a_box(full_run):
    summary = json.loads((full_run / "summary.json").read_text())
    summary["warnings"] = ["KL is <huge>"]
    _write_json(full_run / "summary.json", summary)
    html = build_report(full_run).read_text()
    assert '<div class="warn">' in html and "KL is &lt;huge&gt;" in html


def test_report_computes_warnings_when_absent(full_run):
    # proxy rises 0.1 → 0.6 while gold falls 0.35 → 0.1
    _write_jsonl(full_run / "ppo" / "metrics.jsonl", _ppo_rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
                                                               [0.35, 0.3, 0.25, 0.2, 0.15, 0.1]))
    html = build_report(full_run).read_text()
    assert '<div class="warn">' in html and "Proxy (learned RM) score rose" in html


def test_eval_only_folder_renders_the_statistics_eval_wrote(tmp_path):
    run = tmp_path / "eval_run"
    (run / "eval").mkdir(parents=True)
    save_evaluation(run / "eval" / "eval.json", _eval(), baseline="sft")  # the one producer of statistics
    html = build_report(run).read_text()
    headline = re.search(r'<p class="headline">(.*?)</p>', html).group(1)
    # sft mean = 0.1·(0+…+9)/10 = 0.45; ppo adds 0.2 on 9 prompts and -0.3 on one: 0.45 + (1.8 - 0.3)/10 = 0.6
    assert "from 0.450 to 0.600" in headline and "+0.150" in headline
    assert "0.90" in headline  # win rate: 9 of 10 prompts
    for missing in ("summary.json", "prefs/summary.json", "rm/metrics.jsonl", "ppo/metrics.jsonl"):
        assert f"<code>{missing}</code>" in html
    assert "Training curves" not in html
    assert "data:image/png;base64," in html and "&lt;script&gt;" in html


def test_report_reads_statistics_and_computes_none(tmp_path):
    # rows without `methods`: the report draws them but states no mean, interval or win rate of its own
    run = tmp_path / "eval_run"
    _write_json(run / "eval" / "eval.json", _eval())
    html = build_report(run).read_text()
    assert "No held-out results in this run" in html and "gold win rate" not in html
    assert "data:image/png;base64," in html  # the per-prompt histograms are drawn from the rows
    # `rlhfkit eval`'s summary.json ({"methods", "baseline"}) is read as written: the table shows its numbers
    methods = {"sft": {"gold_reward": 0.444, "gold_reward_ci95": [0.3, 0.6], "rm_reward": 0.0, "kl": 0.0,
                       "response_len": 10.0},
               "ppo": {"gold_reward": 0.777, "gold_reward_ci95": [0.7, 0.8], "rm_reward": 1.0, "kl": 2.45,
                       "response_len": 12.0, "win_rate_gold": 0.9, "win_rate_gold_ci95": [0.7, 1.0],
                       "gold_delta": 0.333, "gold_delta_ci95": [0.2, 0.4]}}
    _write_json(run / "summary.json", {"methods": methods, "baseline": "sft"})
    html = build_report(run).read_text()
    headline = re.search(r'<p class="headline">(.*?)</p>', html).group(1)
    assert "from 0.444 to 0.777" in headline and "+0.333, 95% CI [0.200, 0.400]" in headline
    assert "0.777 [0.700, 0.800]" in html  # the methods table


def test_report_imports_no_model_code():
    code = ("import sys, rlhfkit.report.html; "
            "print([m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'numpy') "
            "or m.startswith(('rlhfkit.eval', 'rlhfkit.trainers', 'rlhfkit.models'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_empty_and_broken_folders_render_and_say_so(tmp_path):
    html = build_report(tmp_path).read_text()
    assert "No held-out results in this run" in html and "<code>eval/eval.json</code>" in html
    (tmp_path / "summary.json").write_text("{not json")
    _write_jsonl(tmp_path / "ppo" / "metrics.jsonl", _ppo_rows([0.1, 0.2], [0.1, 0.2]))
    with open(tmp_path / "ppo" / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "rollout/kl": 1.')  # torn last line
    html = build_report(tmp_path).read_text()
    assert "Unreadable input" in html and "summary.json:" in html and "skipped unreadable line(s) 3" in html
    assert "Training curves" in html


def test_missing_folder_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        build_report(tmp_path / "nope")


# --- checks ------------------------------------------------------------------------------------------------


def test_first_last_thirds_uses_disjoint_thirds_and_skips_missing():
    rows = [{"x": v} for v in (1.0, 2.0, None, 3.0, 4.0, 5.0, 6.0)]  # 6 values: thirds of 2 → (1.5, 5.5)
    assert first_last_thirds(rows, "x") == (1.5, 5.5)
    assert first_last_thirds([{"x": 1.0}], "x") is None


def test_proxy_up_gold_down_warns():
    # proxy thirds: (0.1+0.2)/2 = 0.15 → (0.5+0.6)/2 = 0.55; gold: 0.325 → 0.125
    rows = _ppo_rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.35, 0.3, 0.25, 0.2, 0.15, 0.1])
    warnings = overoptimisation_warnings(rows, {}, {})
    assert len(warnings) == 1
    assert "rose from 0.150 to 0.550" in warnings[0] and "fell from 0.325 to 0.125" in warnings[0]


def test_both_rising_or_both_falling_does_not_warn():
    up = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]
    assert overoptimisation_warnings(_ppo_rows(up, up), {}, {}) == []
    assert overoptimisation_warnings(_ppo_rows(up[::-1], up[::-1]), {}, {}) == []


def test_length_drift_warns_beyond_the_threshold_either_way():
    flat = [0.1] * 6
    # 20 → 31 tokens: +55% > 50%
    longer = overoptimisation_warnings(_ppo_rows(flat, flat, length=[20, 20, 25, 25, 31, 31]), {}, {})
    assert len(longer) == 1 and "from 20.0 to 31.0 tokens (+55%" in longer[0]
    # 20 → 29 tokens: +45% is within the default 50%, but not within 40%
    rows = _ppo_rows(flat, flat, length=[20, 20, 25, 25, 29, 29])
    assert overoptimisation_warnings(rows, {}, {}) == []
    assert len(overoptimisation_warnings(rows, {}, {}, length_drift=0.4)) == 1
    # 20 → 8 tokens: -60%
    shorter = overoptimisation_warnings(_ppo_rows(flat, flat, length=[20, 20, 15, 15, 8, 8]), {}, {})
    assert len(shorter) == 1 and "(-60%" in shorter[0]


def test_kl_above_threshold_at_the_end_warns():
    flat = [0.1] * 6
    # last third of KL: (11 + 13)/2 = 12 > 10; the early 1.0s do not dilute it
    high = overoptimisation_warnings(_ppo_rows(flat, flat, kl=[1, 1, 5, 5, 11, 13]), {}, {})
    assert len(high) == 1 and "12.00 nats" in high[0]
    assert overoptimisation_warnings(_ppo_rows(flat, flat, kl=[1, 1, 5, 5, 9, 10]), {}, {}) == []
    assert overoptimisation_warnings(_ppo_rows(flat, flat, kl=[1, 1, 5, 5, 9, 10]), {}, {}, kl_threshold=9.0)
    # no PPO rows: the candidate's held-out KL
    assert "15.00 nats per response on held-out prompts" in overoptimisation_warnings([], {}, {"kl": 15.0})[0]


def test_heldout_rm_gain_without_gold_gain_warns():
    sft, rlhf = {"rm_reward": 0.1}, {"rm_reward": 0.9}
    fell = overoptimisation_warnings([], sft, {**rlhf, "gold_delta_ci95": [-0.3, -0.1]})
    assert len(fell) == 1 and "gold reward fell" in fell[0] and "[-0.300, -0.100]" in fell[0]
    assert "rose from 0.100 to 0.900" in fell[0]
    flat = overoptimisation_warnings([], sft, {**rlhf, "gold_delta_ci95": [-0.1, 0.2]})
    assert len(flat) == 1 and "did not improve significantly" in flat[0]
    assert overoptimisation_warnings([], sft, {**rlhf, "gold_delta_ci95": [0.05, 0.2]}) == []  # gold confirms
    assert overoptimisation_warnings([], rlhf, {**sft, "gold_delta_ci95": [-0.3, -0.1]}) == []  # RM fell


# --- every method the demo trained --------------------------------------------------------------------------


def _cf_rows(score, gold, beta):
    """A critic-free method's metrics rows: the shared rollout/* keys, β under rl/kl_coef."""
    rows = _ppo_rows(score, gold)
    for r in rows:
        del r["ppo/kl_coef"]
        r["rl/kl_coef"] = beta
    return rows


@pytest.fixture
def all_methods_run(full_run):
    """full_run plus GRPO and RLOO training rows, and DPO and REINFORCE++ in the evaluation's statistics."""
    summary = json.loads((full_run / "summary.json").read_text())
    stats = lambda gold, rm, lo, hi, beta: {  # noqa: E731
        "gold_reward": gold, "gold_reward_ci95": [gold - 0.1, gold + 0.1], "rm_reward": rm, "kl": 3.0,
        "kl_ci95": [2.5, 3.5], "response_len": 11.0, "gold_delta": gold - 0.123, "gold_delta_ci95": [lo, hi],
        "beta": beta}
    summary["methods"].update(dpo=stats(0.2, 0.8, -0.1, 0.05, 0.1), grpo=stats(0.3, 0.9, 0.05, 0.3, 0.02),
                              rloo=stats(0.35, 0.7, 0.1, 0.3, 0.05),
                              reinforce_pp=stats(0.3, 0.6, 0.1, 0.3, 0.05))
    _write_json(full_run / "summary.json", summary)
    up, down = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.35, 0.3, 0.25, 0.2, 0.15, 0.1]
    _write_jsonl(full_run / "grpo" / "metrics.jsonl", _cf_rows(up, down, 0.02))  # proxy up, gold down
    _write_jsonl(full_run / "rloo" / "metrics.jsonl", _cf_rows(up, up, 0.05))
    return full_run


def test_report_shows_every_online_method_its_beta_curves_and_warnings(all_methods_run):
    html = build_report(all_methods_run).read_text()
    # setup: each online method's steps and final β under its own metric key
    assert "PPO: 6 steps; final &#946; (ppo/kl_coef) 0.1;" in html
    assert "GRPO: 6 steps; final &#946; (rl/kl_coef) 0.02;" in html
    assert "RLOO: 6 steps; final &#946; (rl/kl_coef) 0.05;" in html
    # methods table: every method with its β
    for name, beta in (("ppo", "0.1"), ("dpo", "0.1"), ("grpo", "0.02"), ("rloo", "0.05"),
                       ("reinforce_pp", "0.05")):
        assert f"<b>{name}</b> (&#946; {beta})" in html, name
    # warnings per method: GRPO's rollouts (proxy up, gold down), DPO's held-out RM gain without a gold gain
    warnings = html[html.index("<h2>Warnings"):html.index("<h2>Held-out results")]
    assert "GRPO: Proxy (learned RM) score rose from 0.150 to 0.550" in warnings
    assert "third of GRPO steps" in warnings
    assert "DPO: On held-out prompts the RM reward rose from 0.000 to 0.800" in warnings
    assert "PPO:" not in warnings and "RLOO:" not in warnings  # both rose: nothing to warn about
    # held-out: reward-vs-KL, histograms, per-prompt change; RM; proxy/gold for PPO, GRPO, RLOO; KL; length
    assert html.count('<img src="data:image/png;base64,') == 3 + 1 + 3 + 2
    assert "GRPO rollouts per step" in html and "RLOO rollouts per step" in html
    # evaluated, but no training rows in the folder: named
    assert "<code>reinforce_pp/metrics.jsonl</code>: REINFORCE++ training curves" in html
    assert "<code>dpo/metrics.jsonl</code>" not in html  # DPO is no online method


def test_checks_name_the_method_in_their_sentences():
    rows = _ppo_rows([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], [0.35, 0.3, 0.25, 0.2, 0.15, 0.1],
                     kl=[1, 1, 5, 5, 11, 13], length=[20, 20, 25, 25, 31, 31])
    warnings = overoptimisation_warnings(rows, {}, {}, method="RLOO")
    assert len(warnings) == 3 and all("RLOO steps" in w for w in warnings)
    assert not any("PPO" in w for w in warnings)


# --- the reward–KL frontier page ---------------------------------------------------------------------------


def _frontier():
    """frontier.json as `rlhfkit frontier` writes it: PPO fitted, DPO skipped, one note with markup in it."""
    point = lambda method, label, kl, gold, rm: {  # noqa: E731
        "method": method, "label": label, "kl": kl, "kl_ci95": [kl - 0.2, kl + 0.2], "sqrt_kl": kl ** 0.5,
        "gold_reward": 0.1 + gold, "gold_delta": gold, "gold_delta_ci95": [gold - 0.02, gold + 0.02],
        "rm_reward": rm, "rm_delta": rm, "response_len": 20.0}
    points = [point("ppo", "β 0.1", 1.0, 0.1, 0.3), point("ppo", "β 0.01", 4.0, 0.05, 0.9),
              point("dpo", "β 0.1", 2.0, 0.12, 0.4), point("bon", "n 4", 0.64, 0.08, 0.5)]
    return {"demo": "runs/demo", "n_eval_prompts": 60, "eval_samples_per_prompt": 4,
            "bon_samples_per_prompt": 64, "kl": "k1 sequence KL", "points": points,
            "fits": {"ppo": {"form": "rl", "n_points": 2, "sqrt_kl": [0.0, 1.0, 2.0],
                             "gold": {"alpha": 0.1234, "beta": 0.05, "curve": [0.0, 0.1, 0.05]},
                             "proxy": {"alpha": 0.3, "beta": 0.0, "curve": [0.0, 0.3, 0.6]}},
                     "dpo": {"form": "rl", "skipped": "not fitted: needs 2 points with KL > 0, has 1"}},
            "overoptimisation": [{"method": "ppo", "text": "ppo: <proxy> rose while gold fell"}]}


def test_frontier_page_shows_chart_fits_notes_and_points(tmp_path):
    from rlhfkit.report.frontier_page import build_frontier_report

    _write_json(tmp_path / "frontier.json", _frontier())
    html = build_frontier_report(tmp_path).read_text()
    assert html.count('<img src="data:image/png;base64,') == 1  # the two-panel chart
    assert '<div class="warn">' in html and "ppo: &lt;proxy&gt; rose while gold fell" in html
    assert "0.123" in html and "not fitted: needs 2 points with KL &gt; 0, has 1" in html  # fits table
    assert "+0.050 [+0.030, +0.070]" in html and "&#946; 0.01" in html  # points table: β 0.01's gold gain
    assert "4 points (PPO, DPO, best-of-n) on 60 held-out prompts" in html
    assert (tmp_path / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the chart alone, for docs


def test_frontier_page_without_notes_says_so_and_a_missing_file_is_a_data_error(tmp_path):
    from rlhfkit.report.frontier_page import build_frontier_report

    with pytest.raises(DataError, match="frontier.json: not found"):
        build_frontier_report(tmp_path)
    _write_json(tmp_path / "frontier.json", {**_frontier(), "overoptimisation": []})
    assert "No over-optimisation along any sweep" in build_frontier_report(tmp_path).read_text()


def test_demo_report_has_a_frontier_section_when_it_ran(full_run):
    assert "frontier" not in build_report(full_run).read_text().lower()  # none ran: no section, no note
    _write_json(full_run / "frontier" / "frontier.json", _frontier())
    html = build_report(full_run).read_text()
    assert "Reward&#8211;KL frontier (rlhfkit frontier)" in html and 'href="frontier/frontier.html"' in html
    assert html.count('<img src="data:image/png;base64,') == 7 + 1
