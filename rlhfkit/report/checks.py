"""Over-optimisation warnings from PPO metrics rows and the held-out summary: pure functions, no I/O.

A policy over-optimises when it climbs the learned (proxy) reward without climbing the gold reward the proxy
stands for (Gao et al. 2022, "Scaling Laws for Reward Model Overoptimization"). The symptoms checked here:
proxy up while gold goes down, response length drifting, KL to the reference growing large, and a held-out RM
gain that gold does not confirm. Trends compare the mean of the first third of steps with the last third, so a
single noisy rollout batch does not trigger a warning.
"""

from __future__ import annotations

import math


def overoptimisation_warnings(
    ppo_rows: list[dict], baseline: dict, candidate: dict, *, kl_threshold: float = 10.0,
    length_drift: float = 0.5,
) -> list[str]:
    """All warnings that apply, each a plain sentence with the numbers behind it.

    Args:
        ppo_rows: ppo/metrics.jsonl rows in step order (`rollout/score_mean`, `rollout/gold_mean`,
            `rollout/kl`, `rollout/response_len`; missing or None values are skipped).
        baseline, candidate: the held-out statistics of the SFT policy and the trained one, as
            eval/eval.json's `methods` holds them (`rm_reward`; the candidate's `gold_delta_ci95` and `kl`); missing keys skip
            the checks that need them.
        kl_threshold: warn when the final KL per sequence exceeds this many nats.
        length_drift: warn when the mean response length changes by more than this fraction.
    Returns:
        The warnings, possibly empty.
    """
    checks = (
        proxy_up_gold_down(ppo_rows),
        response_length_drift(ppo_rows, length_drift),
        final_kl_too_high(ppo_rows, candidate, kl_threshold),
        heldout_proxy_gain_without_gold(baseline, candidate),
    )
    return [w for w in checks if w]


def proxy_up_gold_down(ppo_rows: list[dict]) -> str | None:
    """Warn when the proxy score rose while the gold reward of the same rollouts fell (first vs last third
    of the steps)."""
    proxy = first_last_thirds(ppo_rows, "rollout/score_mean")
    gold = first_last_thirds(ppo_rows, "rollout/gold_mean")
    if proxy is None or gold is None or not (proxy[1] > proxy[0] and gold[1] < gold[0]):
        return None
    return (f"Proxy (learned RM) score rose from {proxy[0]:.3f} to {proxy[1]:.3f} while the gold reward "
            f"of the same rollouts fell from {gold[0]:.3f} to {gold[1]:.3f} (first vs last third of PPO "
            "steps): the policy is exploiting the reward model.")


def response_length_drift(ppo_rows: list[dict], length_drift: float = 0.5) -> str | None:
    """Warn when the mean response length of the last third of steps differs from the first third's by more
    than `length_drift` (relative)."""
    lengths = first_last_thirds(ppo_rows, "rollout/response_len")
    if lengths is None:
        return None
    first, last = lengths
    change = (last - first) / abs(first) if first else (math.inf if last else 0.0)
    if abs(change) <= length_drift:
        return None
    return (f"Mean response length drifted from {first:.1f} to {last:.1f} tokens ({change:+.0%}, more than "
            f"the ±{length_drift:.0%} allowed; first vs last third of PPO steps): the policy may be gaming "
            "length rather than quality.")


def final_kl_too_high(ppo_rows: list[dict], candidate: dict, kl_threshold: float = 10.0) -> str | None:
    """Warn when KL to the reference at the end exceeds `kl_threshold` nats per sequence.

    "At the end" is the mean `rollout/kl` over the last third of PPO steps; without PPO rows, the
    candidate's held-out `kl`."""
    thirds = first_last_thirds(ppo_rows, "rollout/kl")
    if thirds is not None:
        kl, where = thirds[1], "over the last third of PPO steps"
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
