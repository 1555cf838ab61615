"""One documented dataclass per command (every knob a field with its help text). Imports no torch.

Loading (defaults <- preset <- YAML <- flags, every dataclass built through its constructor, so each
`__post_init__` runs at load time) lives in `rlhfkit.config_loading`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

# re-exported: `from rlhfkit.config import build, save_config` keeps working; `_flatten` and `_instantiate`
# build a group's own defaults (`_group`)
from rlhfkit.config_loading import (  # noqa: F401
    _flatten,
    _instantiate,
    add_arguments,
    build,
    from_args,
    load_yaml,
    save_config,
    to_dict,
)
from rlhfkit.errors import ConfigError


def _f(default: Any, help: str, **kw) -> Any:
    """A dataclass field with a default and its help text (the single source for --help and docs).

    `kw` goes into the metadata that `config_loading` reads: `required=True`, `aliases=(...)`, bounds
    `ge`/`gt`/`le`/`lt` (checked at load, the error names the key), `preset={dotted key: value}` on a bool."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


def _group(cls: type, help: str, **defaults) -> Any:
    """A nested group with this command's own defaults for some of its fields (DPO's optim.lr = 1e-4).

    The defaults are kept in the metadata too, so the loader builds the group through its constructor
    (running its checks) from these defaults plus the user's keys. A default for a group inside the group is
    a mapping (the task demo's grpo: generation={"max_new_tokens": 16})."""
    return field(default_factory=lambda: _instantiate(cls, _flatten(defaults)),
                 metadata={"help": help, "defaults": defaults})


# --------------------------------------------------------------------------- shared groups
@dataclass
class OptimConfig:
    lr: float = _f(5e-5, "peak learning rate (AdamW)", ge=0)
    weight_decay: float = _f(0.0, "AdamW weight decay", ge=0)
    warmup_ratio: float = _f(0.1, "share of the optimiser steps spent warming up linearly", ge=0, le=1)
    scheduler: Literal["linear", "cosine", "constant"] = _f("linear", "decay after warm-up")
    max_grad_norm: float = _f(1.0, "gradient clipping by global norm (0 disables)", ge=0)
    grad_accum_steps: int = _f(1, "micro-batches accumulated per optimiser step", ge=1)


@dataclass
class LoraConfig:
    use_lora: bool = _f(False, "train LoRA adapters (peft) instead of all weights", aliases=("lora",))
    r: int = _f(16, "LoRA rank", ge=1)
    alpha: int = _f(32, "LoRA alpha (scale = alpha / r)", gt=0)
    # dropout 0: RL needs ratio = 1 at step 0 (Huang et al. 2024, detail 'disable dropout')
    dropout: float = _f(0.0, "LoRA dropout", ge=0, lt=1)
    target_modules: str = _f("all-linear", "peft target_modules: 'all-linear' or comma-separated names")


@dataclass
class GenerationConfig:
    """How responses are sampled. The defaults sample exactly from softmax(logits / τ), the distribution every
    log-prob (old, new, reference, KL) describes (ALGORITHMS.md §1); the on-policy trainers refuse truncation."""

    max_new_tokens: int = _f(48, "tokens sampled per response", ge=1)
    temperature: float = _f(0.7, "sampling temperature (also used for every log-prob, so ratio = 1 at step 0)",
                            gt=0)
    top_p: float = _f(1.0, "nucleus sampling (1 = off; evaluation only: PPO's log-probs assume the full softmax)",
                      gt=0, le=1)
    top_k: int = _f(0, "top-k sampling (0 = off; evaluation only: PPO's log-probs assume the full softmax)", ge=0)
    # fast: 1.6-1.8x transformers generate of the plain model, 3.8-4x generate through unmerged LoRA (PPO's
    # default), SmolLM2-135M, batch 8, 48 tokens, bf16 autocast, 1 thread on a shared 2-core Xeon with AMX
    # (native bf16; bench/generate_speed.py)
    engine: Literal["fast", "hf"] = _f(
        "fast", "sampler: fast = rlhfkit.engine (LoRA merged, weights cast once per update, static KV cache; "
        "Llama/Mistral/Qwen2/Qwen3/GPT-2, exact sampling), hf = transformers generate (any model, top-p/top-k; "
        "used automatically where fast does not apply)")
    # measured (bench/sampler_gap.py, SmolLM2 LoRA r16 after 5 AdamW steps, 16 x 48 tokens, Xeon with AMX):
    # sampler gap k3 1.68e-3 merged vs 1.54e-3 separate nats/token (the plain model's own is 1.74e-3: decoding,
    # not the merge, dominates), sampling 226 vs 187 tok/s, a re-sync 0.25 vs 0.03 s: merged stays the default
    engine_lora: Literal["merged", "separate"] = _f(
        "merged", "LoRA in the fast engine under bf16: merged = rounded into bf16(W + s·BA) (fastest sampling); "
        "separate = the delta as its own low-rank matmul, bit for bit what the trainer's forward computes "
        "(0.83x the sampling speed, 0.1x the re-sync time)")

    @property
    def is_exact(self) -> bool:
        """True when samples come from the full softmax at τ (no top-p / top-k truncation)."""
        return self.top_p == 1 and self.top_k == 0


@dataclass
class DataFieldsConfig:
    prompt_field: str = _f("prompt", "column holding the prompt (text or chat messages)")
    chosen_field: str = _f("chosen", "column holding the preferred response")
    rejected_field: str = _f("rejected", "column holding the dispreferred response")
    margin_field: str | None = _f(None, "optional numeric column used as the Bradley–Terry margin")


DEFAULT_TEMPLATE = "Prompt: {prompt}\nResponse: {response}"

Dtype = Literal["auto", "fp32", "bf16"]
# measured, SmolLM2-135M shapes, 1 process: on a Xeon with AMX bf16 matmuls ran ~2.4x faster than fp32; on an
# AVX-512 Xeon without avx512_bf16 ~2x slower ([8, 576] x [576, 1536]: 0.69 ms vs 0.36 ms). `rlhfkit env` times
# both on this machine. Resolved once at the start of a run (rlhfkit.device.resolve_dtypes), into config.yaml.
DTYPE_HELP = ("auto = bf16 where bf16 matmuls are native (x86 with avx512_bf16 or AMX, CUDA with bf16; "
              "RLHFKIT_NATIVE_BF16=0|1 overrides), else fp32; bf16 = autocast with fp32 master weights "
              "(faster only where native: see `rlhfkit env`)")


# --------------------------------------------------------------------------- commands
@dataclass
class EpochTrainingConfig:
    """What the epoch-based trainers (SFT, DPO) share; `trainers/loop.py` reads these fields."""

    data: str | None = _f(None, "training file (JSONL/CSV/Parquet/HF folder)", required=True)
    output: str | None = _f(None, "output folder", required=True)
    eval_data: str | None = _f(None, "held-out file; default: split --eval-fraction off --data")
    use_chat_template: bool = _f(True, "apply the tokenizer's chat template to prompts when it has one")
    epochs: int = _f(2, "passes over the training data", ge=1)
    batch_size: int = _f(8, "examples per micro-batch", ge=1)
    max_length: int = _f(256, "max tokens of prompt + response; if longer, the prompt loses its start "
                              "(the response keeps >= half)", ge=2)
    eval_fraction: float = _f(0.1, "share of --data held out when --eval-data is not given", ge=0, lt=1)
    log_every: int = _f(10, "write the mean training metrics every N batches", ge=1)
    dtype: Dtype = _f("auto", DTYPE_HELP + "; frozen matmul weights are then stored in bf16 (bit-identical)")
    gradient_checkpointing: bool = _f(False, "recompute activations in the backward pass: less memory, slower "
                                             "(see bench/dpo_vs_trl.py for measured figures)")
    resume: bool = _f(False, "continue from the last epoch checkpoint in --output")
    merge_lora: bool = _f(False, "save the final policy with LoRA merged into the weights")
    seed: int = _f(0, "seed for python, numpy, torch and data order")
    optim: OptimConfig = _group(OptimConfig, "optimiser")
    lora: LoraConfig = _group(LoraConfig, "LoRA (off: all weights train)")


@dataclass
class SFTConfig(EpochTrainingConfig):
    """`rlhfkit sft`: supervised fine-tuning of a causal LM on demonstrations (prompt/response or chats)."""

    data: str | None = _f(None, "demonstration file (JSONL/CSV/Parquet/HF folder)", required=True)
    batch_size: int = _f(8, "examples (or packed blocks) per micro-batch", ge=1)
    # 2e-5: the usual full fine-tuning rate for small chat models (TRL's SFT default); with --lora use ~2e-4
    optim: OptimConfig = _group(OptimConfig, "optimiser", lr=2e-5)
    model: str = _f("smollm2-135m-instruct", "causal LM to fine-tune (alias or HF folder)")
    prompt_field: str = _f("prompt", "column holding the prompt (text or chat messages)")
    response_field: str = _f(
        "response", "column holding the response: text, or a chat ending with the assistant's reply (e.g. "
        "`messages`: without a prompt column, the turns before the last assistant message are the prompt)")
    completion_only: bool = _f(True, "loss on the response tokens and EOS only; off: prompt tokens count too")
    packing: bool = _f(
        False, "concatenate examples into --max-length blocks (fewer pad tokens); attention crosses example "
        "boundaries, the loss mask follows --completion-only; evaluation stays per example")


@dataclass
class RMConfig:
    """`rlhfkit rm`: train a Bradley–Terry reward model on preference pairs."""

    data: str | None = _f(None, "preference file (JSONL/CSV/Parquet/HF folder)", required=True)
    output: str | None = _f(None, "output folder", required=True)
    eval_data: str | None = _f(None, "held-out preference file; default: split --eval-fraction off --data")
    base: str = _f("minilm-l6", "backbone: alias (minilm-l6, smollm2-135m-instruct) or local HF folder")
    epochs: int = _f(3, "passes over the training pairs", ge=1)
    batch_size: int = _f(16, "pairs per micro-batch (chosen+rejected are one forward of 2x this)", ge=1)
    max_length: int = _f(256, "max tokens of the templated text", ge=2)
    eval_fraction: float = _f(0.1, "share of --data held out when --eval-data is not given", ge=0, lt=1)
    template: str = _f(DEFAULT_TEMPLATE, "text scored by the RM; stored with the model")
    center_rewards_coef: float = _f(0.0, "coef·mean((r_c + r_r)²) keeps rewards centred (TRL's option)", ge=0)
    dtype: Dtype = _f("auto", DTYPE_HELP)
    log_every: int = _f(10, "write the mean training metrics every N batches", ge=1)
    resume: bool = _f(False, "continue from the last epoch checkpoint in --output")
    seed: int = _f(0, "seed for python, numpy, torch and data order")
    fields: DataFieldsConfig = _group(DataFieldsConfig, "column names")
    # 1e-4 with MiniLM: measured to reach >0.9 held-out accuracy in 3 epochs on a few hundred pairs
    optim: OptimConfig = _group(OptimConfig, "optimiser", lr=1e-4, weight_decay=0.01)
    lora: LoraConfig = _group(LoraConfig, "LoRA")


@dataclass
class EnvConfig:
    """`rlhfkit env`: versions, devices, CPU flags and threads, the precision `--dtype auto` picks here, whether
    the sampling engine's packed bf16 path is used, and a few-second fp32-vs-bf16 matmul timing."""

    json: bool = _f(False, "print one JSON object")
    timing: bool = _f(True, "time fp32 and bf16 matmuls of SmolLM2's shapes (~5 s)")


@dataclass
class ScoreConfig:
    """`rlhfkit score`: score one (prompt, response) or a whole preference file with a reward model."""

    model: str | None = _f(None, "reward-model folder (rlhfkit RM or HF sequence classifier)", required=True)
    prompt: str | None = _f(None, "prompt to score (with --response)")
    response: str | None = _f(None, "response to score (with --prompt)")
    data: str | None = _f(None, "preference file: prints accuracy and n")
    json: bool = _f(False, "print one JSON object")
    batch_size: int = _f(32, "texts per forward pass", ge=1)
    fields: DataFieldsConfig = _group(DataFieldsConfig, "column names")


@dataclass
class OnlineConfig:
    """What every online trainer (PPO, GRPO, RLOO, REINFORCE++) shares; `trainers/online.py` reads these."""

    policy: str = _f("smollm2-135m-instruct", "policy to train (alias or HF folder); also the frozen reference")
    reward_model: str | None = _f(None, "rlhfkit RM folder or any HF sequence-classification folder")
    reward_fn: list[str] = _f(
        [], "Python reward `module:function` or `file.py:function`, called as fn(prompts, completions, "
        "**columns): the prompt file's other fields (e.g. answer) as lists aligned with the completions, "
        "those its parameters name (all with **kwargs); returns floats. Optional `=WEIGHT`; repeat to sum "
        "several; summed with --reward-model when both are given")
    env: str | None = _f(
        None, "environment for multi-turn episodes, `module:Name` or `file.py:Name` (e.g. rlhfkit.envs:Calculator): "
        "a class whose instances have reset(row) -> messages and step(messages, completion) -> (observation "
        "messages or None, reward, done), one per episode (rlhfkit/envs.py). The score is the sum of the step "
        "rewards (+ --reward-model / --reward-fn on the last assistant message); only the policy's own tokens "
        "train (the environment's turns are masked). Default: one completion per prompt")
    max_turns: int = _f(1, "policy turns per episode at most (with --env; an episode also ends when its "
                           "environment says done)", ge=1)
    prompts: str | None = _f(None, "prompt file (JSONL/CSV/Parquet/HF folder) with a `prompt` field", required=True)
    output: str | None = _f(None, "output folder", required=True)
    prompt_field: str = _f("prompt", "column holding the prompt (text or chat messages)")
    use_chat_template: bool = _f(True, "apply the tokenizer's chat template to prompts when it has one")
    steps: int = _f(30, "training steps (one rollout batch each)", ge=1)
    batch_size: int = _f(8, "prompts per rollout batch (per process)", ge=1)
    kl_coef: float = _f(0.1, "β, the KL strength (initial β when --target-kl is set)", ge=0)
    target_kl: float | None = _f(None, "adaptive β (Ziegler et al. 2019): target KL per sequence", gt=0)
    kl_horizon: int = _f(10000, "adaptive-β horizon in samples", ge=1)
    # 2.0 (TRL's and verl's cap), on by default: on the demo (SmolLM2, bf16, sampler gap k3 ≈ 1.8e-3 nats per
    # token) PPO gained +0.042/+0.076/+0.053 gold at KL 1.11/1.23/1.75 with it against +0.052/+0.025/+0.024 at
    # KL 1.56/1.01/1.14 without (seeds 0/1/2; intervals above 0 on 3 vs 1 seeds): within PPO's run-to-run
    # spread, no worse, at no cost, and it corrects a gap that is really there. In fp32 the weights are 1.
    tis_cap: float | None = _f(
        2.0, "truncated importance sampling: weight each token's policy-gradient term by min(π_old/μ, C), μ the "
        "sampler's probability (a sequence's product for --ratio sequence, its geometric mean for gspo), C = "
        "this cap; none = off (the sampler's gap to the trainer is logged as rollout/sampler_kl either way)",
        gt=0)
    missing_eos_penalty: float = _f(
        0.0, "subtracted from the score of responses that hit max_new_tokens without EOS (0 = off: SmolLM2 "
        "rarely ends within 48 tokens, so a penalty would swamp the RM signal; the EOS rate is logged)")
    dtype: Dtype = _f("auto", DTYPE_HELP + "; frozen matmul weights (LoRA base, reference) are then stored "
                                          "in bf16 (bit-identical)")
    gradient_checkpointing: bool = _f(False, "recompute the policy's (and a separate critic's) activations in the "
                                             "backward pass: less memory, slower")
    save_every: int = _f(10, "checkpoint every N steps (atomic); 0 = only at the end", ge=0)
    sample_every: int = _f(5, "log a few (prompt, response, score) samples every N steps", ge=0)
    resume: bool = _f(False, "continue exactly from the last checkpoint in --output")
    merge_lora: bool = _f(False, "save the final policy with LoRA merged into the weights")
    seed: int = _f(0, "seed for python, numpy, torch, sampling and prompt order")
    generation: GenerationConfig = _group(GenerationConfig, "sampling")
    # 1e-4 with LoRA: a peer library on this machine did not move at 2e-5 in 30 steps, rose clearly at 1e-4
    optim: OptimConfig = _group(OptimConfig, "optimiser", lr=1e-4, warmup_ratio=0.0, scheduler="constant")
    lora: LoraConfig = _group(LoraConfig, "LoRA (the CPU default)", use_lora=True)

    group_size = 1  # completions per prompt (the critic-free configs make it a field)

    @property
    def minibatch_size(self) -> int:
        """Rollouts per optimiser step: the batch's batch_size · group_size rollouts in num_minibatches."""
        return self.batch_size * self.group_size // self.num_minibatches

    @property
    def policy_token_budget(self) -> int:
        """The most policy tokens an episode can hold: max_new_tokens per turn, max_turns turns."""
        return self.generation.max_new_tokens * self.max_turns

    def __post_init__(self):
        from rlhfkit.envs import parse_env_spec  # imports nothing either: no torch at load time
        from rlhfkit.rewards import parse_reward_spec  # imports nothing: the specs are only parsed here

        for spec in self.reward_fn:
            parse_reward_spec(spec)
        if self.env is not None:
            parse_env_spec(self.env)
        elif self.max_turns > 1:
            raise ConfigError(f"config key 'max_turns': {self.max_turns} turns need an environment to answer "
                              "between them; give --env (e.g. rlhfkit.envs:Calculator) or drop --max-turns")
        rollouts = self.batch_size * self.group_size
        if rollouts % self.num_minibatches:
            raise ConfigError(f"config key 'num_minibatches': {self.num_minibatches} does not divide the "
                              f"{rollouts} rollouts of a batch (batch_size · group_size)")
        if self.optim.grad_accum_steps > self.minibatch_size:
            raise ConfigError(f"config key 'optim.grad_accum_steps': {self.optim.grad_accum_steps} micro-batches "
                              f"cannot split a minibatch of {self.minibatch_size} rollouts")
        check_on_policy(self.generation, self.lora)


@dataclass
class PPOConfig(OnlineConfig):
    """`rlhfkit ppo`: PPO against a reward model with a per-token KL penalty to the frozen initial policy."""

    value_model: str | None = _f(
        None, "separate critic (HF folder sharing the policy's tokenizer; scalar head added if missing). "
        "Default: a value head on the policy trunk (one forward pass for both: the CPU-friendly choice)")
    ppo_epochs: int = _f(2, "passes over each rollout batch", ge=1)
    num_minibatches: int = _f(2, "shuffled minibatches per pass", ge=1)
    kl_estimator: Literal["k1", "k2", "k3"] = _f("k1", "per-token KL estimator in the reward (ALGORITHMS.md)")
    gamma: float = _f(1.0, "GAE discount γ", ge=0, le=1)
    lam: float = _f(0.95, "GAE λ", ge=0, le=1)
    clip_range: float = _f(0.2, "policy ratio clip ε", gt=0)
    clip_range_value: float = _f(0.2, "value clip ε_v", gt=0)
    vf_coef: float = _f(0.1, "value-loss coefficient c_v (shared trunk: small, so it does not swamp the policy)",
                        ge=0)
    entropy_coef: float = _f(0.0, "entropy bonus c_e")
    whiten_rewards: bool = _f(False, "whiten per-token rewards before GAE")
    normalize_scores: bool = _f(True, "normalise RM scores by running mean/std (stable reward scale)")
    score_clip: float | None = _f(None, "clip (normalised) scores to [-x, x]", gt=0)


Advantage = Literal["grpo", "dr_grpo", "rloo", "reinforce_baseline", "reinforce_pp"]
Ratio = Literal["token", "sequence", "gspo"]
RATIO_HELP = ("importance ratio: per token (GRPO, PPO-style clip); per sequence, the product "
              "exp(Σ_t Δlog π) (sequence: TRL's RLOO); or per sequence, length-normalised exp(mean_t Δlog π) "
              "(gspo: GSPO, Zheng et al. 2025, TRL GRPO's importance_sampling_level='sequence'; clip it at "
              "about 3e-4 / 4e-4)")


@dataclass
class CriticFreeConfig(OnlineConfig):
    """What GRPO, RLOO and REINFORCE++ share: k completions per prompt, no critic (ALGORITHMS.md §8)."""

    group_size: int = _f(4, "k completions sampled per prompt (one batched generate)", ge=1)
    batch_size: int = _f(4, "prompts per rollout batch (per process); batch_size · group_size rollouts", ge=1)
    num_iterations: int = _f(1, "passes over each rollout batch (μ in the GRPO paper)", ge=1)
    num_minibatches: int = _f(1, "shuffled minibatches per pass (each one optimiser step)", ge=1)
    advantage: Advantage = _f(
        "grpo", "advantage estimator: group-normalised (grpo), group-centred (dr_grpo), leave-one-out (rloo), "
        "group-centred then batch-whitened (reinforce_baseline), or token-level returns with the k1 KL in the "
        "reward, batch-whitened (reinforce_pp, REINFORCE++)")
    scale: Literal["group", "batch", "none"] | None = _f(
        None, "divide centred rewards by the group's std, the batch's, or not at all (default: the estimator's own)")
    kl_in: Literal["loss", "reward"] = _f(
        "loss", "where the KL goes: a per-token loss term β·KL (k2 or k3·ρ), or β·Σ_t k1 subtracted from the "
        "reward before the baseline")
    kl_estimator: Literal["k3_ratio", "k2", "k1"] = _f(
        "k3_ratio", "KL estimator: as a loss k3·ρ (unbiased reverse-KL gradient) or k2; in the reward k1 "
        "(ALGORITHMS.md §3: k1 is never a loss)")
    ratio: Ratio = _f("token", RATIO_HELP)
    policy_loss: Literal["clip", "cispo"] = _f(
        "clip", "per-token policy loss: clip = the clipped surrogate −min(ρA, clip(ρ)A) (PPO, GRPO, DAPO); "
        "cispo = REINFORCE weighted by the clipped ratio, −sg(clip(ρ, 1−ε, 1+ε_high))·A·log π (CISPO, "
        "MiniMax-M1 2025): a clipped token keeps its gradient (MiniMax-M1 tuned only ε_high); "
        "--ratio token only")
    # GSPO's objective is a mean over sequences (each s_i already averages its tokens): weighting sequences by
    # their token counts would undo its length normalisation, so loss_agg applies to the per-token ratio only
    loss_agg: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = _f(
        "token_mean", "loss aggregation of the per-token ratio: token mean (DAPO), mean over sequences of "
        "token means (GRPO paper, length-biased), token sum / (sequences · max_new_tokens) (Dr. GRPO); "
        "--ratio sequence and gspo always average over sequences")
    clip_range: float = _f(0.2, "ratio clip ε (ε_low); GSPO's paper uses 3e-4", gt=0)
    clip_range_high: float | None = _f(
        None, "upper clip ε_high (DAPO suggests 0.28, GSPO's paper 4e-4); default ε; per-token ratio or gspo",
        gt=0)
    # DAPO (Yu et al. 2025 §3.4) used a 4096-token buffer before a 20480-token budget
    overlong_buffer: int = _f(
        0, "DAPO's overlong shaping: over the last N tokens before max_new_tokens the reward falls linearly "
        "from 0 to −overlong_penalty (at max_new_tokens); logged unweighted as rollout/reward/overlong; "
        "0 = off",
        ge=0)
    overlong_penalty: float = _f(1.0, "factor of the overlong shaping term (DAPO: 1)", gt=0)
    dynamic_sampling: bool = _f(
        False, "DAPO's dynamic sampling: drop the groups whose k rewards are all equal (zero advantage) and "
        "sample more prompt batches until batch_size groups have a spread; still short after "
        "--dynamic-sampling-rounds, the batch is completed with dropped groups (rollout/groups_short). Logs "
        "rollout/groups_sampled")
    dynamic_sampling_rounds: int = _f(
        4, "extra prompt batches dynamic sampling may sample per step (each costs one batch's generation)",
        ge=1)

    def __post_init__(self):
        super().__post_init__()
        grouped = self.advantage in ("grpo", "dr_grpo", "rloo", "reinforce_baseline")
        if grouped and self.group_size < 2:
            raise ConfigError(f"config key 'group_size': the {self.advantage} baseline needs k >= 2 completions "
                              f"per prompt, got {self.group_size}")
        if self.kl_in == "loss" and self.kl_estimator == "k1":
            raise ConfigError("config key 'kl_estimator': k1 as a loss has zero expected gradient (no KL pull); "
                              "use k3_ratio or k2 with --kl-in loss, or --kl-in reward")
        if self.kl_in == "reward" and self.kl_estimator != "k1":
            raise ConfigError(f"config key 'kl_estimator': {self.kl_estimator} in the reward is not supported; "
                              "the reward takes k1 (Σ_t log π − log π_ref)")
        if self.advantage == "dr_grpo" and self.scale not in (None, "none"):
            raise ConfigError(f"config key 'scale': Dr. GRPO never divides by a std (got {self.scale!r}); use "
                              "--advantage grpo for a scaled one")
        if self.advantage == "reinforce_pp" and self.kl_in != "reward":
            raise ConfigError("config key 'kl_in': REINFORCE++ puts the k1 KL in the per-token reward; "
                              "use --kl-in reward")
        if self.ratio == "sequence" and (self.kl_in == "loss" or self.advantage == "reinforce_pp"):
            raise ConfigError("config key 'ratio': a sequence ratio needs one advantage per sequence and the KL "
                              "in the reward (RLOO); use --ratio token")
        if self.ratio == "sequence" and self.clip_range_high is not None:
            raise ConfigError(f"config key 'clip_range_high': {self.clip_range_high} is a per-token clip; the "
                              "sequence ratio clips symmetrically at clip_range; drop it or use --ratio token")
        self._check_verifiable_options()

    def _check_verifiable_options(self):
        """GSPO, CISPO and DAPO's shaping and sampling: refuse what the math does not define."""
        if self.ratio == "gspo" and self.advantage == "reinforce_pp":
            raise ConfigError("config key 'ratio': gspo weighs one advantage per sequence; reinforce_pp's "
                              "are per token; use --ratio token")
        if self.policy_loss == "cispo" and self.ratio != "token":
            raise ConfigError(f"config key 'policy_loss': cispo clips each token's importance weight; "
                              f"--ratio {self.ratio} has no per-token weight; use --ratio token")
        if self.overlong_buffer and self.max_turns > 1:
            raise ConfigError(f"config key 'overlong_buffer': {self.overlong_buffer} shapes one completion's "
                              f"length against max_new_tokens; an episode of up to {self.max_turns} turns has "
                              "no such budget; drop it with --max-turns > 1")
        if self.overlong_buffer > self.generation.max_new_tokens:
            raise ConfigError(f"config key 'overlong_buffer': {self.overlong_buffer} is over max_new_tokens "
                              f"{self.generation.max_new_tokens}; the buffer is the last tokens of that "
                              "budget")
        if self.overlong_penalty != 1.0 and not self.overlong_buffer:
            raise ConfigError(f"config key 'overlong_penalty': {self.overlong_penalty} has no effect without "
                              "--overlong-buffer; set both, or neither")
        if self.dynamic_sampling and self.advantage == "reinforce_pp":
            raise ConfigError("config key 'dynamic_sampling': it drops groups whose group-baseline "
                              "advantages are 0; reinforce_pp's batch-whitened returns are not 0 there; "
                              "use a group advantage")
        if self.dynamic_sampling_rounds != 4 and not self.dynamic_sampling:
            raise ConfigError(f"config key 'dynamic_sampling_rounds': {self.dynamic_sampling_rounds} has no "
                              "effect without --dynamic-sampling; set both, or neither")


@dataclass
class GRPOConfig(CriticFreeConfig):
    """`rlhfkit grpo`: GRPO (group-normalised advantages, clipped ratio, KL as a loss through k3·ρ)."""

    kl_coef: float = _f(0.02, "β of the KL loss term (0 = no KL term; DeepSeekMath used 0.04)", ge=0)


@dataclass
class _KLInRewardConfig(CriticFreeConfig):
    """RLOO's and REINFORCE++'s shared defaults: the k1 KL in the reward, β 0.05 (TRL's RLOO default)."""

    kl_in: Literal["loss", "reward"] = _f("reward", "where the KL goes (see `rlhfkit grpo --help`)")
    kl_estimator: Literal["k3_ratio", "k2", "k1"] = _f("k1", "KL estimator (k1 in the reward)")
    kl_coef: float = _f(0.05, "β in the reward: r' = r − β Σ_t k1 (RLOO), r_t = −β·k1_t (REINFORCE++)", ge=0)


@dataclass
class RLOOConfig(_KLInRewardConfig):
    """`rlhfkit rloo`: RLOO (leave-one-out baseline, k1 KL in the reward, sequence-level ratio)."""

    advantage: Advantage = _f("rloo", "advantage estimator (see `rlhfkit grpo --help`)")
    ratio: Ratio = _f("sequence", RATIO_HELP)


@dataclass
class ReinforcePPConfig(_KLInRewardConfig):
    """`rlhfkit reinforce-pp`: REINFORCE++ (k1 KL in the per-token reward, returns whitened over the batch)."""

    advantage: Advantage = _f("reinforce_pp", "advantage estimator (see `rlhfkit grpo --help`)")


def check_on_policy(generation: GenerationConfig, lora: LoraConfig) -> None:
    """An on-policy trainer (PPO, GRPO, RLOO, REINFORCE++) scores its samples with the full softmax at τ and trains in
    train mode, so it refuses sampling truncation and LoRA dropout: either would make ratio ≠ 1 and KL ≠ 0
    at step 0, and every later ratio and KL describe a distribution that was not sampled."""
    if not generation.is_exact:
        key = "top_p" if generation.top_p != 1 else "top_k"
        raise ConfigError(
            f"config key 'generation.{key}': {getattr(generation, key)} truncates sampling, but the log-probs "
            "(ratio, KL) are of the full softmax at the temperature; use top_p 1 and top_k 0 for training")
    if lora.dropout:
        raise ConfigError(f"config key 'lora.dropout': {lora.dropout} makes the training forward differ from the "
                          "rollout's (ratio ≠ 1 at step 0); use 0 for on-policy training")


@dataclass
class DPOConfig(EpochTrainingConfig):
    """`rlhfkit dpo`: DPO and its offline variants (IPO, hinge, SimPO) on preference pairs, without an RM."""

    data: str | None = _f(None, "preference file (JSONL/CSV/Parquet/HF folder)", required=True)
    eval_data: str | None = _f(None, "held-out preference file; default: split --eval-fraction off --data")
    # measured on the demo's pairs (SmolLM2, LoRA r16, bf16, β 0.1, 329 pairs, seed 0; held-out gold gain over
    # SFT with a 95% CI, KL to SFT in nats): lr 5e-5 x 1 epoch +0.027 [-0.007, 0.059] at KL 0.2 (barely moved);
    # 2e-4 x 1 +0.141 [0.104, 0.180] at KL 4.0; 1e-4 x 2 +0.150 [0.108, 0.193] at KL 5.1; 2e-4 x 2 +0.248 at
    # KL 21 (far from the reference). ALGORITHMS.md's 5e-6 is for large models and many steps. At 1e-4 x 2:
    # β 0.05 +0.164 at KL 6.1, β 0.1 +0.150 at KL 5.1, β 0.3 +0.128 at KL 3.2 (one frontier; β picks the point);
    # LoRA r32/α64 +0.224 at KL 14.5. β 0.1 and r16 keep DPO's KL near PPO's (2-7 nats) with a clear gain.
    # dtype bf16 (inherited): between bf16 passes of different batch shapes the step-0 check measured
    # |log π − log π_ref| = 0.04 nats per response, an implicit-reward noise of 0.004 at β 0.1
    epochs: int = _f(2, "passes over the training pairs (ALGORITHMS.md: 1–3)", ge=1)
    batch_size: int = _f(8, "pairs per micro-batch (chosen+rejected are one forward of 2x this)", ge=1)
    optim: OptimConfig = _group(OptimConfig, "optimiser", lr=1e-4)
    lora: LoraConfig = _group(LoraConfig, "LoRA (the CPU default; reference = adapters disabled)",
                              use_lora=True)
    policy: str = _f("smollm2-135m-instruct", "policy to train (alias or HF folder); its initial state is "
                                               "the reference")
    loss: Literal["sigmoid", "ipo", "hinge", "simpo"] = _f(
        "sigmoid", "sigmoid = DPO, ipo (length-averaged log-probs), hinge = SLiC, simpo = SimPO (no ref.)")
    beta: float = _f(0.1, "β of sigmoid/ipo/hinge: implicit reward r = β (log π − log π_ref)", gt=0)
    label_smoothing: float = _f(0.0, "ε of conservative DPO (sigmoid only): share of labels assumed flipped")
    simpo_beta: float = _f(2.0, "SimPO's β (rewards are length-averaged, so it is larger; Meng et al. 2024)",
                           gt=0)
    simpo_gamma: float = _f(0.5, "SimPO's target reward margin γ")
    ref_cache: str | None = _f(None, "folder for the cached reference log-probs (default: --output); a cache "
                                     "is reused when model, data and tokenisation settings match")
    fields: DataFieldsConfig = _group(DataFieldsConfig, "column names (no margin: DPO has none)")

    def __post_init__(self):
        if self.label_smoothing and self.loss != "sigmoid":
            raise ConfigError(f"config key 'label_smoothing': {self.label_smoothing} only applies to "
                              f"--loss sigmoid, not {self.loss}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"config key 'label_smoothing': {self.label_smoothing} is not in [0, 0.5)")
        if self.fields.margin_field is not None:
            raise ConfigError("config key 'fields.margin_field': DPO uses no margin; remove it")


# `rlhfkit demo --quick`: tiny sizes for a smoke run, applied at load time under YAML and flags
QUICK_PRESET = {"rm_prompts": 12, "rm_val_prompts": 4, "samples_per_prompt": 2, "pairs_per_prompt": 1,
                "rm_epochs": 1, "min_gold_gap": 0.0, "eval_samples_per_prompt": 1, "eval_prompts": 8,
                "ppo.steps": 2, "ppo.batch_size": 4, "generation.max_new_tokens": 12,
                "ppo.generation.max_new_tokens": 12, "dpo.max_length": 64,
                **{f"{a}.{k}": v for a in ("grpo", "rloo", "reinforce_pp")
                   for k, v in (("steps", 2), ("batch_size", 2), ("generation.max_new_tokens", 12))}}


@dataclass
class DemoConfig:
    """`rlhfkit demo`: the whole RLHF loop on the embedded models, with a simulated annotator and a report."""

    output: str = _f("runs/demo", "run folder; a rerun skips finished stages")
    policy: str = _f("smollm2-135m-instruct", "the SFT policy to align (alias or HF folder)")
    rm_base: str = _f("minilm-l6", "reward-model backbone")
    prompts: str | None = _f(None, "prompt file with `prompt` (and optional `split`: train|heldout); "
                                   "default: the ~300 prompts shipped with rlhfkit")
    quick: bool = _f(False, "a smoke run in a few minutes: the tiny sizes of QUICK_PRESET (YAML and flags "
                            "override them); used by the tests", preset=QUICK_PRESET)
    force: bool = _f(False, "rerun every stage even if its outputs exist")
    seed: int = _f(0, "seed for every stage")
    rm_prompts: int = _f(128, "train prompts whose sampled responses are labelled for the RM (stage 2)", ge=1)
    rm_val_prompts: int = _f(32, "further train prompts labelled for RM validation", ge=1)
    samples_per_prompt: int = _f(4, "K responses sampled per prompt for labelling", ge=2)
    pairs_per_prompt: int = _f(4, "labelled pairs drawn from the K responses of a prompt", ge=1)
    label_temperature: float = _f(0.1, "Bradley–Terry noise of the simulated annotator (0 = always gold)",
                                  ge=0)
    # measured: with all pairs labelled, a quarter had |Δgold| < 0.05 (coin flips) and RM gold accuracy was 0.57
    min_gold_gap: float = _f(0.2, "the annotator skips pairs whose gold scores differ by less (near-ties)",
                             ge=0)
    rm_epochs: int = _f(2, "reward-model epochs (validation loss rose in a 3rd epoch)", ge=1)
    eval_prompts: int = _f(60, "held-out prompts for the final comparison (never used in stages 2–4)", ge=1)
    # 4: with 2, one of 3 seeds had a gold-gain interval of [-0.003, 0.137]; sampling noise per prompt dominated
    eval_samples_per_prompt: int = _f(4, "responses per held-out prompt and policy; scores are averaged per "
                                         "prompt", ge=1)
    # 128: the engine samples 363 tok/s at batch 128 against 254 at 32 (2-core Xeon with AMX, bf16, bench-style A/B)
    generation_batch_size: int = _f(128, "prompts per generate() call when sampling for labels/eval", ge=1)
    # 50 steps: at 30 the held-out gold gain was +0.08 with a 95% CI of [0.03, 0.14] (seed 0). 20 steps at lr
    # 2.5e-4 took 7.8-7.9 min against ~13.5 (on a slow day) but gained less gold at 2x the KL on the same data
    # (seeds 0/1/2: +0.017/+0.065/+0.051 vs +0.048/+0.084/+0.041); the defaults took 7.1-7.6 min on a fast day
    # (2-core Xeon with AMX, native bf16)
    # (docs/benchmarks/demo.md)
    ppo: PPOConfig = _group(PPOConfig, "PPO options (policy/reward_model/output are set by the demo, which "
                                       "passes its train prompts in memory)", steps=50)
    generation: GenerationConfig = _group(GenerationConfig, "sampling for labels and evaluation")
    algo: str = _f("ppo", "methods trained on the same preferences, comma-separated: ppo, dpo, grpo, rloo, "
                          "reinforce_pp; or all")
    dpo: DPOConfig = _group(DPOConfig, "DPO options (policy/data/output are set by the demo)")
    # the critic-free methods sample k = 4 completions of 4 prompts per step: 16 rollouts, twice PPO's 8; 25 steps
    # (400 samples) were measured against PPO's former 50 × 8 at lr 1e-4 (docs/benchmarks/demo.md, GRPO and RLOO)
    grpo: GRPOConfig = _group(GRPOConfig, "GRPO options (set by the demo like --ppo.*)", steps=25)
    rloo: RLOOConfig = _group(RLOOConfig, "RLOO options (set by the demo like --ppo.*)", steps=25)
    reinforce_pp: ReinforcePPConfig = _group(ReinforcePPConfig, "REINFORCE++ options (set by the demo like --ppo.*)",
                                             steps=25)

    @property
    def algos(self) -> list[str]:
        """The methods to train, in the order of ALGOS."""
        asked = ALGOS if self.algo == "all" else [a.strip() for a in self.algo.split(",")]
        return [a for a in ALGOS if a in asked]

    def __post_init__(self):
        asked = [] if self.algo == "all" else [a.strip() for a in self.algo.split(",")]
        unknown = [a for a in asked if a not in ALGOS]
        if unknown or not (asked or self.algo == "all"):
            raise ConfigError(f"config key 'algo': {self.algo!r}; choose from {', '.join(ALGOS)} (comma-separated) "
                              "or all")


ALGOS = ["ppo", "dpo", "grpo", "rloo", "reinforce_pp"]  # the demo's methods; the online ones need the RM


TASK_ALGOS = ["grpo", "rloo"]  # what `rlhfkit task-demo` trains (critic-free: the grader needs no critic)
# 16: SmolLM2's held-out pass@1 on add was the same at 12 and 24 tokens (41.7% vs 40.9%, 33 problems x 4,
# rlhfkit.tasks) and the trained answers ("7 + 7 = 14") take about 9; 16 leaves room, costs less than 24
TASK_MAX_NEW_TOKENS = 16
# `rlhfkit task-demo --quick`: a smoke run in a couple of minutes on 2 cores, applied at load time under YAML
# and flags
TASK_QUICK_PRESET = {"eval_problems": 16, "eval_samples": 4, **{f"{a}.steps": 8 for a in TASK_ALGOS}}


@dataclass
class TaskDemoConfig:
    """`rlhfkit task-demo`: RL with a verifiable reward on a built-in task (rlhfkit.tasks). GRPO (and RLOO)
    train the policy on the task's train problems with its exact grader as the reward
    (`rlhfkit.tasks:correct`, the path `rlhfkit grpo --reward-fn` takes); then the starting policy and each
    trained one answer every held-out problem eval_samples times: pass@1, pass@k, format failures, KL to the
    start, response length, with 95% intervals over problems, in summary.json and report.html."""

    task: str = _f("add", "built-in task: add, add2, format, sort, units (`rlhfkit.tasks`; its docstring "
                          "gives each one's accuracy before RL)")
    output: str | None = _f(None, "run folder (default runs/task-<task>); a rerun skips finished stages")
    policy: str = _f("smollm2-135m-instruct", "the starting policy (alias or HF folder), also the KL "
                                               "reference")
    algo: str = _f("grpo", "methods trained, comma-separated: grpo, rloo")
    train_problems: int = _f(0, "train problems the training prompts are drawn from (0 = the whole train "
                                "split)", ge=0)
    eval_problems: int = _f(0, "held-out problems evaluated (0 = the whole held-out split)", ge=0)
    eval_samples: int = _f(8, "samples per held-out problem and policy: pass@1 is their mean correctness, "
                              "pass@k takes k = this", ge=1)
    quick: bool = _f(False, "a smoke run in a couple of minutes: TASK_QUICK_PRESET (YAML and flags override "
                            "it); used by the tests", preset=TASK_QUICK_PRESET)
    force: bool = _f(False, "rerun every stage even if its outputs exist")
    seed: int = _f(0, "seed for the problems drawn, training and evaluation sampling")
    generation_batch_size: int = _f(128, "sequences per generate() call in the evaluation", ge=1)
    generation: GenerationConfig = _group(GenerationConfig, "sampling for the evaluation (the training's "
                                                            "τ and length, so KL is read where it trained)",
                                          max_new_tokens=TASK_MAX_NEW_TOKENS)
    # measured on add, seed 0 (2-core Xeon with AMX, native bf16): 30 steps of 4 prompts x k 8, lr 1e-4 LoRA,
    # β 0.02 took held-out pass@1 from 40.5% to 94.3% (Δ 95% CI [+46.2, +60.6] points) at KL 1.8 nats; the
    # training reward passed 0.8 by step 15-17; seeds 1/2: +52.3 [+44.7, +59.1], +51.1 [+42.4, +59.9] at KL
    # 1.78/1.70. k 8 as in the probe (k 4 was not measured). The quick 8 steps (16 problems x 4):
    # +28.1/+7.8/+18.8 points on seeds 0/1/2, the interval above 0 on 2 of 3
    grpo: GRPOConfig = _group(GRPOConfig, "GRPO options (policy, prompts, reward_fn, output and seed are set "
                                          "by the task demo)", steps=30, batch_size=4, group_size=8,
                              generation={"max_new_tokens": TASK_MAX_NEW_TOKENS})
    rloo: RLOOConfig = _group(RLOOConfig, "RLOO options (set by the task demo like --grpo.*)", steps=30,
                              batch_size=4, group_size=8, generation={"max_new_tokens": TASK_MAX_NEW_TOKENS})

    @property
    def output_dir(self) -> str:
        """Where the run writes: `output`, else runs/task-<task>."""
        return self.output or f"runs/task-{self.task}"

    @property
    def algos(self) -> list[str]:
        """The methods to train, in the order of TASK_ALGOS."""
        asked = {a.strip() for a in self.algo.split(",")}
        return [a for a in TASK_ALGOS if a in asked]

    def __post_init__(self):
        from rlhfkit.tasks import TASKS  # pure Python: no torch at load time

        if self.task not in TASKS:
            raise ConfigError(f"config key 'task': {self.task!r}; choose from {', '.join(TASKS)}")
        asked = [a.strip() for a in self.algo.split(",")]
        if not asked or any(a not in TASK_ALGOS for a in asked) or len(set(asked)) != len(asked):
            raise ConfigError(f"config key 'algo': {self.algo!r}; choose each of {', '.join(TASK_ALGOS)} at "
                              "most once (comma-separated)")
        for algo in self.algos:  # the evaluation reads KL and accuracy where the policy trained
            trained = getattr(self, algo).generation
            for key in ("temperature", "max_new_tokens"):
                evaluated, used = getattr(self.generation, key), getattr(trained, key)
                if evaluated != used:
                    raise ConfigError(f"config key 'generation.{key}': {evaluated} differs from "
                                      f"{algo}.generation.{key} {used}; evaluate with the training's sampling "
                                      "(set both)")


@dataclass
class EvalConfig:
    """`rlhfkit eval`: compare policies on held-out prompts with the demo's evaluation and report."""

    policy: list[str] = _f([], "policy folder or alias; repeat the flag (first = baseline); NAME=PATH names it")
    prompts: str | None = _f(None, "prompt file (`prompt` field)", required=True)
    output: str | None = _f(None, "output folder (eval/eval.json, summary.json, report.html)", required=True)
    reward_model: str | None = _f(None, "learned reward model to score with (optional)")
    reference: str | None = _f(None, "reference policy for KL (default: the first --policy)")
    gold: bool = _f(True, "also score with the demo's gold reward (VADER-based simulated annotator)")
    max_prompts: int = _f(0, "use only the first N prompts (0 = all)", ge=0)
    batch_size: int = _f(32, "prompts per generate() call", ge=1)
    samples_per_prompt: int = _f(4, "responses per prompt and policy; scores are averaged per prompt (the demo's "
                                    "setting: with 2, sampling noise per prompt dominated)", ge=1)
    dtype: Dtype = _f("auto", DTYPE_HELP + " (sampling and scoring)")
    seed: int = _f(0, "sampling seed")
    generation: GenerationConfig = _group(GenerationConfig, "sampling")

    @property
    def named_policies(self) -> dict[str, str]:
        """--policy sft=PATH --policy PATH2 -> {"sft": PATH, <PATH2's folder name>: PATH2}; first = baseline."""
        out = {}
        for spec in self.policy:
            if "=" in spec:
                name, _, path = spec.partition("=")
            else:
                name, path = spec.rstrip("/").rsplit("/", 1)[-1], spec
            if not name or not path:
                raise ConfigError(f"config key 'policy': {spec!r} names no policy; write PATH or NAME=PATH")
            if name in out:
                raise ConfigError(f"config key 'policy': name {name!r} used twice; write NAME=PATH")
            out[name] = path
        return out

    def __post_init__(self):
        if not self.policy:
            raise ConfigError("config key 'policy': eval needs at least one --policy (repeat it to compare)")
        _ = self.named_policies  # checks the names at load time


@dataclass
class BonConfig:
    """`rlhfkit bon`: best-of-n against the reward model on held-out prompts (sft vs bon<n>, and the curve of
    gold and proxy reward for n = 1, 2, 4, ..., max_n at the analytic KL log n − (n−1)/n)."""

    policy: str = _f("smollm2-135m-instruct", "the SFT policy to sample from (alias or HF folder); also the "
                                               "KL reference")
    reward_model: str | None = _f(None, "the proxy: reward model whose best of n is kept", required=True)
    prompts: str | None = _f(None, "prompt file (`prompt` field)", required=True)
    output: str | None = _f(None, "output folder (eval/eval.json, summary.json with the curve, report.html)",
                            required=True)
    n: int = _f(16, "n of the best-of-n method compared with sft (`bon<n>` in eval.json)", ge=1)
    max_n: int | None = _f(None, "largest n of the curve = samples drawn per prompt (default: n)", ge=1)
    gold: bool = _f(True, "also score with the demo's gold reward (VADER-based simulated annotator)")
    max_prompts: int = _f(0, "use only the first N prompts (0 = all)", ge=0)
    batch_size: int = _f(32, "sequences per generate() call (a prompt's samples are consecutive)", ge=1)
    use_chat_template: bool = _f(True, "apply the tokenizer's chat template to prompts when it has one")
    dtype: Dtype = _f("auto", DTYPE_HELP + " (sampling)")
    seed: int = _f(0, "sampling and bootstrap seed")
    generation: GenerationConfig = _group(GenerationConfig, "sampling")

    @property
    def num_samples(self) -> int:
        """N, the responses sampled per prompt: every n <= N is estimated from them."""
        return self.max_n or self.n

    def __post_init__(self):
        if self.max_n is not None and self.max_n < self.n:
            raise ConfigError(f"config key 'max_n': {self.max_n} is below n = {self.n}; "
                              "the curve must reach n")


FRONTIER_METHODS = ("ppo", "dpo", "grpo", "rloo", "reinforce_pp", "bon")  # what `rlhfkit frontier` can sweep
# `rlhfkit frontier --quick`: a smoke run (2 β per method at the ends of each default list, 2 steps, 1 DPO
# epoch, 4 held-out prompts with one sample each, best-of-n up to 4), applied at load time under YAML and
# flags
FRONTIER_QUICK_PRESET = {"ppo_kl_coef": "0.01,0.1", "dpo_beta": "0.05,1", "grpo_kl_coef": "0,0.1",
                         "rloo_kl_coef": "0.01,0.2", "reinforce_pp_kl_coef": "0.01,0.2", "steps": 2,
                         "dpo_epochs": 1, "eval_prompts": 4, "eval_samples_per_prompt": 1, "bon_max_n": 4}


@dataclass
class FrontierConfig:
    """`rlhfkit frontier`: the reward–KL frontier on a finished demo's preferences and reward model.

    Sweeps the KL strength β of each method (one training run per value, each a resumable stage with a
    done.json marker), adds best-of-n from the SFT policy (n = 1, 2, 4, ..., bon_max_n; no training),
    evaluates every point on the same held-out prompts with the same gold, proxy (the demo's RM) and KL, and
    writes frontier.json (points, Gao et al. fits, over-optimisation notes) and frontier.html. The full
    sweep trains 12 policies: an hour or more on 2 CPU cores (a progress bar shows the ETA); --quick is a smoke run."""

    demo: str | None = _f(None, "a finished `rlhfkit demo` folder: its config.yaml (policy, seed, prompt "
                                "split, method settings), prefs/ and rm/ are reused", required=True)
    output: str | None = _f(None, "output folder (default: DEMO/frontier); a rerun skips finished points")
    methods: str = _f("ppo,dpo,grpo,rloo,bon",
                      "methods swept, comma-separated: " + ", ".join(FRONTIER_METHODS))
    # The β lists spread the points in KL and each holds the demo's default, so a point the demo trained with
    # the same settings is reused, not retrained. Measured: PPO β 0.1 ends at KL 1.3-2.4 nats after 50 steps
    # (docs/benchmarks/demo.md); DPO β 0.05 / 0.1 / 0.3 at KL 6.1 / 5.1 / 3.2 (DPOConfig), so β 1 should sit
    # near 1-2 nats.
    # Lower β lets the online methods drift further; GRPO β 0 has no KL term at all (the far end).
    ppo_kl_coef: str = _f("0.01,0.03,0.1", "PPO β values (kl_coef), comma-separated")
    dpo_beta: str = _f("0.05,0.1,1", "DPO β values, comma-separated")
    grpo_kl_coef: str = _f("0,0.02,0.1", "GRPO β values (kl_coef of the KL loss; 0 = none), comma-separated")
    rloo_kl_coef: str = _f("0.01,0.05,0.2", "RLOO β values (kl_coef of the k1 KL in the reward), "
                                             "comma-separated")
    reinforce_pp_kl_coef: str = _f("0.01,0.05,0.2", "REINFORCE++ β values, comma-separated (when in "
                                                     "--methods)")
    bon_max_n: int = _f(64, "best-of-n: responses sampled per held-out prompt; points at n = 1, 2, 4, ..., "
                            "this", ge=1)
    steps: int | None = _f(None, "training steps of every online point (default: the demo's, per method)",
                           ge=1)
    dpo_epochs: int | None = _f(None, "epochs of every DPO point (default: the demo's)", ge=1)
    eval_prompts: int | None = _f(None, "held-out prompts every point is evaluated on (default: the demo's)",
                                  ge=1)
    eval_samples_per_prompt: int | None = _f(None, "responses per held-out prompt and trained point "
                                                   "(default: the demo's)", ge=1)
    quick: bool = _f(False, "a smoke run: the tiny sizes of FRONTIER_QUICK_PRESET (YAML and flags override "
                            "them)", preset=FRONTIER_QUICK_PRESET)
    force: bool = _f(False, "retrain and re-evaluate every point even if its outputs exist")

    @property
    def output_dir(self) -> str:
        """Where the sweep writes: `output`, else DEMO/frontier."""
        return self.output or f"{self.demo.rstrip('/')}/frontier"

    @property
    def method_list(self) -> list[str]:
        """The methods to sweep, in the order of FRONTIER_METHODS."""
        asked = {m.strip() for m in self.methods.split(",")}
        return [m for m in FRONTIER_METHODS if m in asked]

    def betas(self, method: str) -> list[float]:
        """The β values swept for a trained `method` (ppo, dpo, grpo, rloo, reinforce_pp)."""
        key = "dpo_beta" if method == "dpo" else f"{method}_kl_coef"
        return [float(v) for v in getattr(self, key).split(",")]

    def __post_init__(self):
        asked = [m.strip() for m in self.methods.split(",")]
        unknown = [m for m in asked if m not in FRONTIER_METHODS]
        if unknown or len(set(asked)) != len(asked):
            raise ConfigError(f"config key 'methods': {self.methods!r}; choose each of "
                              f"{', '.join(FRONTIER_METHODS)} at most once (comma-separated)")
        for method in (m for m in self.method_list if m != "bon"):
            key = "dpo_beta" if method == "dpo" else f"{method}_kl_coef"
            _check_betas(key, getattr(self, key), positive=method == "dpo")


def _check_betas(key: str, text: str, positive: bool) -> None:
    """A comma-separated list of distinct finite β >= 0 (> 0 if `positive`); ConfigError naming `key`."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ConfigError(f"config key '{key}': {text!r} is not a comma-separated list of numbers") from None
    allowed = (lambda v: v > 0) if positive else (lambda v: v >= 0)  # NaN fails both
    if not all(allowed(v) and v != float("inf") for v in values) or len(set(values)) != len(values):
        raise ConfigError(f"config key '{key}': {text!r}; give distinct finite values "
                          f"{'> 0' if positive else '>= 0'}")
