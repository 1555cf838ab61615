"""Over-optimisation warnings from an online method's metrics rows, the held-out summary, and a reward–KL
sweep (`rlhfkit frontier`): pure functions, no I/O.

A policy over-optimises when it climbs the learned (proxy) reward without climbing the gold reward the proxy
stands for (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization"). The symptoms checked here:
proxy up while gold goes down, response length drifting, KL to the reference growing large, and a held-out RM
gain that gold does not confirm. Trends compare the mean of the first third of steps with the last third, so a
single noisy rollout batch does not trigger a warning. Along a sweep (one point per KL strength), the symptom
is the proxy gain rising from point to point while the gold gain falls (ALGORITHMS.md §10).
"""

from __future__ import annotations

import math


def overoptimisation_warnings(
    rows: list[dict], baseline: dict, candidate: dict, *, method: str = "PPO", kl_threshold: float = 10.0,
    length_drift: float = 0.5,
) -> list[str]:
    """All warnings that apply, each a plain sentence with the numbers behind it.

    Args:
        rows: the online method's metrics.jsonl rows in step order (`rollout/score_mean`, `rollout/gold_mean`,
            `rollout/kl`, `rollout/response_len`, shared by PPO, GRPO, RLOO and REINFORCE++; missing or None
            values are skipped); [] for a method without rollouts (DPO).
        baseline, candidate: the held-out statistics of the SFT policy and the trained one, as
            eval/eval.json's `methods` holds them (`rm_reward`; the candidate's `gold_delta_ci95` and `kl`);
            missing keys skip the checks that need them.
        kl_threshold: warn when the final KL per sequence exceeds this many nats.
        length_drift: warn when the mean response length changes by more than this fraction.
        method: the method's name in the sentences ("first vs last third of GRPO steps").
    Returns:
        The warnings, possibly empty.
    """
    checks = (
        proxy_up_gold_down(rows, method),
        response_length_drift(rows, length_drift, method),
        final_kl_too_high(rows, candidate, kl_threshold, method),
        heldout_proxy_gain_without_gold(baseline, candidate),
    )
    return [w for w in checks if w]


def proxy_up_gold_down(rows: list[dict], method: str = "PPO") -> str | None:
    """Warn when the proxy score rose while the gold reward of the same rollouts fell (first vs last third
    of the steps)."""
    proxy = first_last_thirds(rows, "rollout/score_mean")
    gold = first_last_thirds(rows, "rollout/gold_mean")
    if proxy is None or gold is None or not (proxy[1] > proxy[0] and gold[1] < gold[0]):
        return None
    return (f"Proxy (learned RM) score rose from {proxy[0]:.3f} to {proxy[1]:.3f} while the gold reward "
            f"of the same rollouts fell from {gold[0]:.3f} to {gold[1]:.3f} (first vs last third of {method} "
            "steps): the policy is exploiting the reward model.")


def response_length_drift(rows: list[dict], length_drift: float = 0.5, method: str = "PPO") -> str | None:
    """Warn when the mean response length of the last third of steps differs from the first third's by more
    than `length_drift` (relative)."""
    lengths = first_last_thirds(rows, "rollout/response_len")
    if lengths is None:
        return None
    first, last = lengths
    change = (last - first) / abs(first) if first else (math.inf if last else 0.0)
    if abs(change) <= length_drift:
        return None
    return (f"Mean response length drifted from {first:.1f} to {last:.1f} tokens ({change:+.0%}, more than "
            f"the ±{length_drift:.0%} allowed; first vs last third of {method} steps): the policy may be "
            "gaming length rather than quality.")


def final_kl_too_high(rows: list[dict], candidate: dict, kl_threshold: float = 10.0,
                      method: str = "PPO") -> str | None:
    """Warn when KL to the reference at the end exceeds `kl_threshold` nats per sequence.

    "At the end" is the mean `rollout/kl` over the last third of the method's steps; without rows, the
    candidate's held-out `kl`."""
    thirds = first_last_thirds(rows, "rollout/kl")
    if thirds is not None:
        kl, where = thirds[1], f"over the last third of {method} steps"
    elif finite(candidate.get("kl")) is not None:
        kl, where = finite(candidate.get("kl")), "on held-out prompts"
    else:
        return None
    if kl <= kl_threshold:
        return None
    return (f"KL to the reference policy is {kl:.2f} nats per response {where}, above the "
            f"{kl_threshold:g}-nat threshold: the policy has moved far from SFT, where the reward model "
            "is least reliable.")


def heldout_proxy_gain_without_gold(baseline: dict, candidate: dict) -> str | None:
    """Warn when held-out RM reward rose from baseline to candidate but the candidate's gold improvement
    (95% CI) does not lie above 0."""
    rm_sft, rm_rlhf = finite(baseline.get("rm_reward")), finite(candidate.get("rm_reward"))
    ci = finite_pair(candidate.get("gold_delta_ci95"))
    if rm_sft is None or rm_rlhf is None or ci is None:
        return None
    low, high = ci
    if rm_rlhf <= rm_sft or low > 0:
        return None
    verdict = "fell" if high < 0 else "did not improve significantly"
    return (f"On held-out prompts the RM reward rose from {rm_sft:.3f} to {rm_rlhf:.3f} but the gold reward "
            f"{verdict} (Δ gold 95% CI [{low:.3f}, {high:.3f}]): the RM gain does not transfer to gold.")


def sweep_overoptimisation(points: list[dict]) -> list[dict]:
    """Where, along each method's sweep ordered by KL, the proxy gain keeps rising while the gold gain falls.

    Each method's points start from the SFT policy (KL 0, both gains 0) and are ordered by KL; every maximal
    run of consecutive steps in which `rm_delta` rises and `gold_delta` falls is one note. It is flagged
    `within_noise` when the run's last point's gold-gain 95% interval still reaches the first point's gain.

    Args:
        points: frontier.json rows: {"method", "label", "kl", "rm_delta", "gold_delta", "gold_delta_ci95"?}.
    Returns:
        [{"method", "from", "to", "kl_from", "kl_to", "proxy_from", "proxy_to", "gold_from", "gold_to",
        "within_noise", "text"}], by method in the order of first appearance, then by KL.
    """
    origin = {"label": "SFT", "kl": 0.0, "rm_delta": 0.0, "gold_delta": 0.0}
    notes = []
    for method in dict.fromkeys(p["method"] for p in points):
        sweep = [origin] + sorted((p for p in points if p["method"] == method), key=lambda p: p["kl"])
        worse = [b["rm_delta"] > a["rm_delta"] and b["gold_delta"] < a["gold_delta"]
                 for a, b in zip(sweep, sweep[1:])]
        start = None
        for i, is_worse in enumerate([*worse, False]):  # step i goes from sweep[i] to sweep[i + 1]
            if is_worse and start is None:
                start = i
            elif not is_worse and start is not None:
                notes.append(_sweep_note(method, sweep[start], sweep[i]))
                start = None
    return notes


def _sweep_note(method: str, first: dict, last: dict) -> dict:
    ci = finite_pair(last.get("gold_delta_ci95"))
    within_noise = ci is not None and ci[1] >= first["gold_delta"]
    text = (f"{method}: from {first['label']} (KL {first['kl']:.2f}) to {last['label']} "
            f"(KL {last['kl']:.2f}) the proxy (RM) gain rose {first['rm_delta']:+.3f} → "
            f"{last['rm_delta']:+.3f} while the gold gain fell {first['gold_delta']:+.3f} → "
            f"{last['gold_delta']:+.3f}")
    text += "; within the last point's 95% interval, so possibly noise." if within_noise else "."
    return {"method": method, "from": first["label"], "to": last["label"], "kl_from": first["kl"],
            "kl_to": last["kl"], "proxy_from": first["rm_delta"], "proxy_to": last["rm_delta"],
            "gold_from": first["gold_delta"], "gold_to": last["gold_delta"], "within_noise": within_noise,
            "text": text}


def first_last_thirds(rows: list[dict], key: str) -> tuple[float, float] | None:
    """(mean of the first third, mean of the last third) of the finite values of `key`, in row order.

    Each third has max(1, n // 3) values, so they never overlap. None with fewer than 2 values."""
    values = [v for v in (finite(r.get(key)) for r in rows) if v is not None]
    if len(values) < 2:
        return None
    k = max(1, len(values) // 3)
    return sum(values[:k]) / k, sum(values[-k:]) / k


def finite(value) -> float | None:
    """`value` as a finite float, else None (metrics.jsonl writes NaN and missing values as null)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def finite_pair(value) -> tuple[float, float] | None:
    """A [low, high] interval as two finite floats, else None."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    low, high = finite(value[0]), finite(value[1])
    return None if low is None or high is None else (low, high)
