"""Rollouts: sample responses (single-turn, or multi-turn episodes with an environment: `run_episodes`), then
per-token log-probs (policy and reference, same temperature), values and reward-model scores. Shared by PPO
and evaluation (and the critic-free methods, with DAPO's dynamic sampling). No optimiser here."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from rlhfkit import engine, rewards
from rlhfkit.data.collate import template_env_turn, template_prompts
from rlhfkit.data.readers import Prompt, prompt_text
from rlhfkit.envs import SingleTurn
from rlhfkit.errors import ConfigError
from rlhfkit.models.load import reference_mode
from rlhfkit.models.policy import response_logprobs

log = logging.getLogger(__name__)


@dataclass
class Rollout:
    """One batch of experience. Response tensors are [B, T], right-padded; `mask` is 1 up to and incl. EOS
    (in a multi-turn episode: on the tokens of every policy turn, 0 on the environment's turns between them)."""

    prompts: list[Prompt]
    query_ids: torch.Tensor  # [B, P] left-padded
    query_mask: torch.Tensor  # [B, P]
    response_ids: torch.Tensor  # [B, T]
    mask: torch.Tensor  # [B, T] float
    responses: list[str]  # decoded text up to (not incl.) EOS
    ended: torch.Tensor  # [B] bool: response ended with EOS
    scores: torch.Tensor | None = None  # [B] raw reward-model scores
    logprobs: torch.Tensor | None = None  # [B, T] log π_old
    ref_logprobs: torch.Tensor | None = None  # [B, T] log π_ref
    values: torch.Tensor | None = None  # [B, T] V_old
    # [B, T] log μ(y_t) = log softmax(logits / τ)[y_t] as the sampler computed them while sampling (0 after
    # EOS): the engine always, `generate`'s fallback when asked. The trainers compute log π_old with their own
    # forward and log the gap (rollout/sampler_kl) and, with --tis-cap, correct for it
    sample_logprobs: torch.Tensor | None = None
    # [B] each prompt row's other fields {name: value} (the prompt file's columns, e.g. the `answer` a
    # verifiable reward checks), repeated with the prompt: what the reward functions were given
    columns: list[dict] | None = None
    reward_terms: dict[str, torch.Tensor] | None = None  # {name: [B]} each summed reward term, unweighted
    # multi-turn episodes (`run_episodes`): the response block is the rest of the conversation, `mask` 1 on
    # the policy's own sampled tokens only; `responses` holds each episode's last assistant message
    turns: torch.Tensor | None = None  # [B] float: policy turns played
    conversations: list[list[dict]] | None = None  # [B] the messages, reset's first, the last assistant's last
    timings: dict[str, float] = field(default_factory=dict)
    sampling: dict[str, float] = field(default_factory=dict)  # how the batch was drawn (dynamic sampling)

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.query_ids, self.response_ids], 1)  # [B, P+T]

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.query_mask, torch.ones_like(self.response_ids)], 1)  # [B, P+T]

    @property
    def response_len(self) -> torch.Tensor:
        return self.mask.sum(1)  # [B]

    def select(self, idx: torch.Tensor) -> "Rollout":
        """Rows `idx` of every tensor and list (for minibatches; `timings` and `sampling` stay behind)."""
        rows = idx.tolist()

        def pick(v):
            if isinstance(v, torch.Tensor):
                return v[idx]
            return {k: t[idx] for k, t in v.items()} if isinstance(v, dict) else [v[i] for i in rows]

        return Rollout(**{k: pick(v) for k, v in vars(self).items()
                          if k not in ("timings", "sampling") and v is not None})


# Where each [B, ...] field is padded when rollouts of different widths are stacked: prompts on the left
# (they are left-padded), responses on the right; with this value
_LEFT_PADDED = {"query_ids": "pad", "query_mask": 0}
_RIGHT_PADDED = {"response_ids": "pad", "mask": 0.0, "logprobs": 0.0, "ref_logprobs": 0.0, "values": 0.0,
                 "sample_logprobs": 0.0}


def cat_rollouts(rolls: list[Rollout], pad_token_id: int) -> Rollout:
    """The rows of `rolls` in order, as one Rollout: prompts left-padded and responses right-padded to the
    widest (masked, so log-probs of the real tokens do not change: positions skip left padding); `timings`
    summed. Every rollout must hold the same fields."""
    out = {}
    for key, first in vars(rolls[0]).items():
        values = [vars(r)[key] for r in rolls]
        if key == "timings":
            out[key] = {k: sum(v.get(k, 0.0) for v in values) for k in first}
        elif key == "sampling" or first is None:
            out[key] = first
        elif isinstance(first, dict):
            out[key] = {k: torch.cat([v[k] for v in values]) for k in first}
        elif isinstance(first, list):
            out[key] = [x for v in values for x in v]
        elif key in _LEFT_PADDED or key in _RIGHT_PADDED:
            fill = {**_LEFT_PADDED, **_RIGHT_PADDED}[key]
            fill = pad_token_id if fill == "pad" else fill
            width = max(v.shape[1] for v in values)
            left = key in _LEFT_PADDED
            out[key] = torch.cat([torch.nn.functional.pad(v, (width - v.shape[1], 0) if left
                                                          else (0, width - v.shape[1]), value=fill)
                                  for v in values])  # [ΣB, width]
        else:
            out[key] = torch.cat(values)  # [ΣB]
    return Rollout(**out)


def encode_prompts(tokenizer, prompts: list[Prompt], use_chat_template: bool = True, max_length: int = 256):
    """Left-padded prompt ids [B, P] and mask, with the chat template when the tokenizer has one."""
    texts, add_special = template_prompts(tokenizer, prompts, use_chat_template)
    enc = tokenizer(texts, padding=True, padding_side="left", truncation=True, max_length=max_length,
                    add_special_tokens=add_special, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def response_mask(response_ids: torch.Tensor, eos_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """mask [B, T] = 1 up to and including the first EOS (all ones if none); ended [B] bool."""
    is_eos = response_ids == eos_token_id  # [B, T]
    ended = is_eos.any(1)  # [B]
    first_eos = torch.where(ended, is_eos.float().argmax(1), response_ids.shape[1] - 1)  # [B]
    positions = torch.arange(response_ids.shape[1], device=response_ids.device)  # [T]
    return (positions[None] <= first_eos[:, None]).float(), ended


# Every GenerationConfig field that can change which token is drawn or when a response stops, set to "off".
# None means "unset" to transformers, which fills it from the model folder's generation_config.json and then
# from its global defaults (top_k 50): `generate` below also swaps the model's own config out, so an unset
# field stays unset. No min_new_tokens: it masks EOS at t = 0, a distribution the log-probs do not describe.
NEUTRAL_SAMPLING = dict(
    do_sample=True, num_beams=1, num_return_sequences=1, use_cache=True, min_length=0, min_new_tokens=None,
    top_k=0, top_p=1.0, min_p=None, top_h=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
    repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_no_repeat_ngram_size=0,
    length_penalty=1.0, exponential_decay_length_penalty=None, bad_words_ids=None, sequence_bias=None,
    suppress_tokens=None, begin_suppress_tokens=None, forced_bos_token_id=None, forced_eos_token_id=None,
    renormalize_logits=False, remove_invalid_values=False, guidance_scale=None, watermarking_config=None,
    token_healing=False, stop_strings=None, max_time=None, penalty_alpha=None, dola_layers=None,
    prompt_lookup_num_tokens=None, assistant_early_exit=None,
)


def sampling_config(gen_cfg, tokenizer):
    """The transformers GenerationConfig of `generate`: softmax(logits / τ), truncated only by gen_cfg's own
    top-p / top-k (which the on-policy trainers refuse), stopping at the tokenizer's EOS or max_new_tokens."""
    from transformers import GenerationConfig

    return GenerationConfig(**NEUTRAL_SAMPLING | dict(
        temperature=gen_cfg.temperature, top_p=gen_cfg.top_p, top_k=gen_cfg.top_k,
        max_new_tokens=gen_cfg.max_new_tokens, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))


@contextlib.contextmanager
def own_generation_config(lm, config):
    """Make `config` the model's generation config for a `generate` call: transformers fills every unset field
    of the config it is given from the model's (a folder's `top_k: 1` or `repetition_penalty: 1.3` leaked
    into sampling that way), so the model's is swapped out for the same config and put back afterwards."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm  # peft's generate reads the base model's
    saved = base.generation_config
    base.generation_config = config
    try:
        yield
    finally:
        base.generation_config = saved


def is_partitioned(lm) -> bool:
    """Whether `lm`'s weights are split over processes by DeepSpeed ZeRO-3 (placeholders with a `ds_id`) or
    FSDP2 (DTensors, with a `device_mesh`): every forward then gathers them with a collective, so all
    processes must run the same number of decoding steps (`generate(synced_gpus=True)` keeps stepping a
    process whose rows have all ended)."""
    import torch.distributed as dist

    return (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
            and any(hasattr(p, "ds_id") or hasattr(p, "device_mesh") for p in lm.parameters()))


@contextlib.contextmanager
def whole_for_sampling(model):
    """FSDP2: gather the root's own shard group (embeddings, final norm, LM head) for sampling and the LoRA
    reference pass, which call the policy inside the prepared model directly, so the root's forward hooks
    that would gather them never run; each decoder layer still gathers and frees itself in its own hooks.
    Anything else: nothing to do."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield
        return
    # the root's first forward would set it up as the root (its layers then never act as roots of their own);
    # sampling comes before any such forward, so do that set-up here (torch 2.13 has no public call for it)
    model._get_fsdp_state()._lazy_init()
    model.unshard()
    try:
        yield
    finally:
        model.reshard()


def hf_generate(lm, tokenizer, query_ids: torch.Tensor, query_mask: torch.Tensor, gen_cfg,
                with_logprobs: bool = False):
    """Responses [B, T<=max_new_tokens] from transformers' `generate` with `sampling_config` (the fallback of
    the engine: any model, and the top-p / top-k of evaluation), and with `with_logprobs` the sampler's
    log-probs of the drawn tokens [B, T] (log softmax of `generate`'s processed scores: logits / τ, then the
    truncation of top-p / top-k if any; 0 after EOS), else None."""
    config = sampling_config(gen_cfg, tokenizer)
    was_training = lm.training
    lm.eval()  # some models drop the KV cache in train mode under checkpointing; dropout is 0 in both modes
    with own_generation_config(lm, config):
        out = lm.generate(input_ids=query_ids, attention_mask=query_mask, generation_config=config,
                          output_scores=with_logprobs, return_dict_in_generate=True,
                          synced_gpus=is_partitioned(lm))
    lm.train(was_training)
    response_ids = out.sequences[:, query_ids.shape[1]:]  # [B, T]
    if not with_logprobs:
        return response_ids, None
    logprobs = torch.stack([torch.log_softmax(scores.float(), -1).gather(1, response_ids[:, t:t + 1]).squeeze(1)
                            for t, scores in enumerate(out.scores)], 1)  # [B, T]
    return response_ids, logprobs


_FALLBACKS_LOGGED: set[str] = set()


def uses_engine(lm, gen_cfg) -> bool:
    """Whether `generate` samples with rlhfkit.engine: asked for (gen_cfg.engine, default "fast"), exact sampling
    (the engine implements no top-p / top-k) and a model it supports; the fallback is logged once per reason."""
    if getattr(gen_cfg, "engine", "fast") != "fast":
        return False
    reason = "top-p / top-k sampling" if not gen_cfg.is_exact else engine.unsupported_reason(lm)
    if reason is not None and reason not in _FALLBACKS_LOGGED:
        _FALLBACKS_LOGGED.add(reason)
        log.info("sampling with transformers generate, not the fast engine: %s", reason)
    return reason is None


@torch.no_grad()
def generate(lm, tokenizer, prompts: list[Prompt], gen_cfg, use_chat_template: bool = True,
             sampler_logprobs: bool = False) -> Rollout:
    """Sample one response per prompt from softmax(logits / τ) (batched, KV cache, left padding); cut after EOS.
    A response may be empty (EOS first): that is one of the outcomes whose probability the log-probs give.

    Sampling runs in rlhfkit.engine (a merged copy of `lm`, refreshed when its weights change, under the
    caller's autocast) or, with gen_cfg.engine "hf" or where the engine does not apply, in `hf_generate`.
    `roll.sample_logprobs` holds the sampler's log-probs of the drawn tokens: always from the engine, from
    `hf_generate` when `sampler_logprobs` (it then keeps every step's [B, V] scores until the end)."""
    query_ids, query_mask = encode_prompts(tokenizer, prompts, use_chat_template)
    device = next(lm.parameters()).device
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)
    response_ids, mask, ended, sample_logprobs = sample_ids(lm, tokenizer, query_ids, query_mask, gen_cfg,
                                                            sampler_logprobs)
    return Rollout(list(prompts), query_ids, query_mask, response_ids, mask, decode_responses(tokenizer, response_ids),
                   ended, sample_logprobs=sample_logprobs)


def sample_ids(lm, tokenizer, query_ids: torch.Tensor, query_mask: torch.Tensor, gen_cfg,
               sampler_logprobs: bool = False):
    """`generate`'s sampling on token ids: responses to left-padded queries [B, P] from the engine (or
    `hf_generate`), cut after the first EOS. Returns (response_ids [B, T] (pad after EOS), mask [B, T],
    ended [B], the sampler's log-probs [B, T] (0 after EOS) or None)."""
    if uses_engine(lm, gen_cfg):
        response_ids, sample_logprobs = engine.sampler_for(lm, getattr(gen_cfg, "engine_lora", "merged")).sample(
            query_ids, query_mask, temperature=gen_cfg.temperature, max_new_tokens=gen_cfg.max_new_tokens,
            eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)  # [B, T]
    else:
        response_ids, sample_logprobs = hf_generate(lm, tokenizer, query_ids, query_mask, gen_cfg,
                                                    with_logprobs=sampler_logprobs)  # [B, T] each
    mask, ended = response_mask(response_ids, tokenizer.eos_token_id)
    response_ids = torch.where(mask.bool(), response_ids, tokenizer.pad_token_id)  # nothing after EOS
    if sample_logprobs is not None:
        sample_logprobs = torch.where(mask.bool(), sample_logprobs, 0.0)  # [B, T]: 0 after EOS, as the engine's
    return response_ids, mask, ended, sample_logprobs


def decode_responses(tokenizer, response_ids: torch.Tensor) -> list[str]:
    """The text of each response [B, T] before its EOS (special tokens and padding dropped)."""
    return tokenizer.batch_decode(torch.where(response_ids == tokenizer.eos_token_id, tokenizer.pad_token_id,
                                              response_ids), skip_special_tokens=True)


def left_pad(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id rows of different lengths as left-padded ids [B, L] and attention mask [B, L]."""
    width = max(len(row) for row in rows)
    ids = rows[0].new_full((len(rows), width), pad_id)  # [B, L]
    mask = torch.zeros(len(rows), width, dtype=torch.long, device=rows[0].device)  # [B, L]
    for k, row in enumerate(rows):
        ids[k, width - len(row):], mask[k, width - len(row):] = row, 1
    return ids, mask


def stack_pieces(pieces: list[list[tuple]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each episode's (ids [L], is the policy's, sampler log-probs [L]) pieces, in order, as right-padded
    response_ids [B, T], mask [B, T] (1.0 on the policy's pieces) and sampler log-probs [B, T]."""
    width = max(sum(len(piece[0]) for piece in episode) for episode in pieces)
    first = pieces[0][0][0]
    response_ids = first.new_full((len(pieces), width), pad_id)  # [B, T]
    mask = torch.zeros(len(pieces), width, device=first.device)  # [B, T]
    sample_logprobs = torch.zeros(len(pieces), width, device=first.device)  # [B, T]
    for i, episode in enumerate(pieces):
        t = 0
        for piece_ids, is_policy, piece_logprobs in episode:
            response_ids[i, t:t + len(piece_ids)] = piece_ids
            mask[i, t:t + len(piece_ids)] = float(is_policy)
            sample_logprobs[i, t:t + len(piece_ids)] = piece_logprobs
            t += len(piece_ids)
    return response_ids, mask, sample_logprobs


@torch.no_grad()
def run_episodes(lm, tokenizer, prompts: list[Prompt], gen_cfg, *, columns: list[dict] | None = None,
                 make_env: Callable = SingleTurn, max_turns: int = 1,
                 use_chat_template: bool = True) -> tuple[Rollout, list[float]]:
    """One episode per prompt with a fresh environment each (`rlhfkit.envs`), played together: each turn,
    every episode still running samples its next assistant message in one batched sampler call
    (`sample_ids`: the engine of single-turn sampling) on its whole conversation so far as token ids, then
    its environment steps; an episode ends when its environment says done or after `max_turns` policy turns.

    Tokens: the query is reset's messages templated (`encode_prompts`); the response block is the rest of
    the conversation, each policy turn's sampled ids as they were drawn (up to and incl. EOS; mask 1, the
    sampler's log-probs kept) and, between turns, `collate.template_env_turn`'s text tokenised (the
    observation and the template's tokens around it; mask 0, sampler log-prob 0). The next turn is sampled
    on exactly these ids, so the trainer's forward over the block sees what the sampler saw. With
    SingleTurn (no --env) this is `generate`: one call, the same query and response tensors.

    Args: columns: [B] each prompt row's other fields (reset gets {"prompt": prompt, **columns}).
    Returns: (roll with responses = each episode's last assistant message, turns and conversations;
        each episode's summed step rewards [B])."""
    rows = [{**row, "prompt": prompt} for prompt, row in zip(prompts, columns or [{}] * len(prompts))]
    envs = [make_env() for _ in rows]
    conversations = [list(env.reset(row)) for env, row in zip(envs, rows)]
    query_ids, query_mask = encode_prompts(tokenizer, [tuple(m) for m in conversations], use_chat_template)
    device = next(lm.parameters()).device
    query_ids, query_mask = query_ids.to(device), query_mask.to(device)
    if max_turns > 1 and is_partitioned(lm):  # processes would run different numbers of sampler calls
        raise ConfigError("config key 'max_turns': multi-turn episodes with weights split over processes "
                          "(DeepSpeed ZeRO-3, FSDP2) are not supported (their generate needs every process in "
                          "every call); use ZeRO-2 or DDP")
    n = len(rows)
    pieces = [[] for _ in range(n)]  # per episode: (ids [L], is the policy's, sampler log-probs [L]) in order
    step_rewards, turns, ended, last = [0.0] * n, [0] * n, [False] * n, [""] * n
    active = list(range(n))
    for turn in range(max_turns):
        if turn == 0:
            ids, mask = query_ids, query_mask
        else:  # prompt and conversation so far, unpadded, then left-padded again
            ids, mask = left_pad([torch.cat([query_ids[i][query_mask[i].bool()], *(p[0] for p in pieces[i])])
                                  for i in active], tokenizer.pad_token_id)  # [A, L] each
        response_ids, turn_mask, turn_ended, turn_logprobs = sample_ids(lm, tokenizer, ids, mask, gen_cfg,
                                                                        sampler_logprobs=True)  # [A, T] ...
        texts = decode_responses(tokenizer, response_ids)
        still = []
        for j, i in enumerate(active):
            length = int(turn_mask[j].sum())
            pieces[i].append((response_ids[j, :length], True, turn_logprobs[j, :length]))
            observation, reward, done = envs[i].step(list(conversations[i]), texts[j])
            conversations[i].append({"role": "assistant", "content": texts[j]})
            step_rewards[i] += float(reward)
            turns[i], ended[i], last[i] = turns[i] + 1, bool(turn_ended[j]), texts[j]
            if not done and turn + 1 < max_turns:
                observation = list(observation or [])
                text = template_env_turn(tokenizer, conversations[i][:-1], observation, ended[i], use_chat_template)
                env_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
                pieces[i].append((env_ids.to(device), False, torch.zeros(len(env_ids), device=device)))
                conversations[i] += observation
                still.append(i)
        active = still
        if not active:
            break
    response_ids, policy_mask, sample_logprobs = stack_pieces(pieces, tokenizer.pad_token_id)  # [B, T] each
    roll = Rollout(list(prompts), query_ids, query_mask, response_ids, policy_mask, last,
                   torch.tensor(ended, device=device), sample_logprobs=sample_logprobs,
                   turns=torch.tensor(turns, dtype=torch.float32, device=device), conversations=conversations)
    return roll, step_rewards


@torch.no_grad()
def policy_logprobs(lm, roll: Rollout, temperature: float) -> torch.Tensor:
    """log π(y_t | x, y_<t) [B, T] of the sampled tokens under `lm`, with logits / temperature."""
    return response_logprobs(lm, roll.input_ids, roll.attention_mask, roll.response_ids, temperature)


def reference_logprobs(actor_critic, ref_lm, roll: Rollout, temperature: float) -> torch.Tensor:
    """log π_ref [B, T]: a frozen copy if given, else the same weights with LoRA adapters disabled."""
    if ref_lm is not None:
        return policy_logprobs(ref_lm, roll, temperature)
    with reference_mode(actor_critic.lm):
        return policy_logprobs(actor_critic.lm, roll, temperature)


def sample_and_score(lm, tokenizer, reward_model, prompts: list[Prompt], gen_cfg, *,
                     columns: list[dict] | None = None, use_chat_template: bool = True,
                     autocast=contextlib.nullcontext, make_env: Callable | None = None,
                     max_turns: int = 1) -> Rollout:
    """1. sample y ~ π(·|x): `run_episodes` with `make_env`'s environments (None: `envs.SingleTurn`, one
    completion per prompt); 2. score: the episode's summed step rewards (logged as the term "env" when
    `make_env` is given) plus `rewards.score_completions` on its last assistant message when `reward_model`
    (an RM, reward functions or both) is not None, which gives reward functions each prompt's `columns`
    ([B] {name: value}, kept in `roll.columns`) and keeps each term in `roll.reward_terms`.
    No log-probs of the trainer yet; `roll.timings` holds the time of both."""
    t0 = time.perf_counter()
    with autocast():
        roll, step_rewards = run_episodes(lm, tokenizer, prompts, gen_cfg, columns=columns,
                                          make_env=make_env or SingleTurn, max_turns=max_turns,
                                          use_chat_template=use_chat_template)
    t1 = time.perf_counter()
    scores, terms = step_rewards, {}
    if reward_model is not None:
        with autocast():
            texts = [prompt_text(p) for p in prompts]
            scored, terms = rewards.score_completions(reward_model, texts, roll.responses,
                                                      rewards.columns_of(columns or []))
        scores = [step + score for step, score in zip(step_rewards, scored)]  # 0 + s = s without an env
    if make_env is not None:
        terms = {"env": step_rewards, **terms}
    device = roll.response_ids.device
    roll.scores = torch.tensor(scores, dtype=torch.float32, device=device)  # [B]
    roll.reward_terms = {name: torch.tensor(values, dtype=torch.float64, device=device)  # [B] each
                         for name, values in terms.items()} or None
    roll.columns = None if columns is None else list(columns)
    roll.timings = {"time/generation_s": t1 - t0, "time/scoring_s": time.perf_counter() - t1}
    return roll


def collect_rollout(actor_critic, ref_lm, tokenizer, reward_model, prompts: list[Prompt], gen_cfg, *,
                    columns: list[dict] | None = None, use_chat_template: bool = True,
                    autocast=contextlib.nullcontext, old_logprobs: bool = True, refill=None,
                    make_env: Callable | None = None, max_turns: int = 1) -> Rollout:
    """1. sample y ~ π(·|x) (multi-turn episodes with `make_env`, `sample_and_score`); 2. score r_φ(x, y)
    (reward functions also get each prompt's `columns`); 3. log π_old, log π_ref and V_old, all without
    gradients.
    `refill(roll) -> Rollout`, between scoring and the log-prob passes: DAPO's dynamic sampling
    (`trainers/online.py`) drops groups there and adds more sampled and scored ones, so the log-probs are
    computed once, on the batch that trains.
    `old_logprobs=False` (a critic-free step with one update per batch): no pass for log π_old (left None; the
    update's own forward gives it, `trainers/critic_free.py`)."""
    with whole_for_sampling(actor_critic):
        roll = sample_and_score(actor_critic.lm, tokenizer, reward_model, prompts, gen_cfg, columns=columns,
                                use_chat_template=use_chat_template, autocast=autocast, make_env=make_env,
                                max_turns=max_turns)
        if refill is not None:
            roll = refill(roll)
    t2 = time.perf_counter()
    with torch.no_grad(), autocast():
        if old_logprobs:
            roll.logprobs, roll.values, _ = actor_critic(
                roll.input_ids, roll.attention_mask, roll.query_ids.shape[1], roll.response_ids, gen_cfg.temperature
            )
        with whole_for_sampling(actor_critic):  # with LoRA the reference is the policy inside, adapters off
            roll.ref_logprobs = reference_logprobs(actor_critic, ref_lm, roll, gen_cfg.temperature)
    roll.timings["time/logprobs_s"] = time.perf_counter() - t2
    return roll


def dynamic_sampling(keep: Callable, draw: Callable, sample: Callable, *, n_groups: int, group_size: int,
                     max_rounds: int, pad_token_id: int, any_short: Callable = lambda short: short):
    """DAPO's dynamic sampling (Yu et al. 2025 §3.2) as `collect_rollout`'s `refill`: of the scored batch,
    keep the groups `keep(roll) -> [P] bool` accepts (a reward spread: the others have zero advantage); while
    short of `n_groups`, draw the next prompts (`draw() -> (prompts, columns)`, each prompt's `group_size`
    copies together), sample and score them (`sample(prompts, columns) -> Rollout`) and keep their accepted
    groups too, for at most `max_rounds` extra rounds. The first `n_groups` kept groups train, in the order
    drawn. A batch still short after the last round is completed with dropped groups (first drawn first):
    their advantages are 0, so they add no policy gradient, and the batch keeps the size every minibatch and
    process expects (DAPO's code raises instead). `any_short(short) -> bool` decides for all processes
    together (the trainer gathers it), so all run the same number of rounds and the collectives of sampling
    (ZeRO-3 generate) stay in step. `roll.sampling` gets rollout/groups_sampled (this step, this process),
    rollout/sampling_rounds (the extra rounds) and rollout/groups_short (dropped groups that trained)."""

    def refill(roll: Rollout) -> Rollout:
        drawn, keeps = [roll], [keep(roll)]  # rollouts of n_groups groups each; [P] bool each
        while len(drawn) <= max_rounds and any_short(sum(int(m.sum()) for m in keeps) < n_groups):
            drawn.append(sample(*draw()))
            keeps.append(keep(drawn[-1]))
        parts, need = [], n_groups
        for wanted in (True, False):  # kept groups first, then dropped ones while the batch is short
            for part, kept in zip(drawn, keeps):
                groups = (kept == wanted).nonzero().squeeze(1)[:need]  # [≤ need]
                need -= len(groups)
                if len(groups):  # their rows: the group_size consecutive completions of each
                    offsets = torch.arange(group_size, device=groups.device)  # [k]
                    parts.append(part.select((groups[:, None] * group_size + offsets).reshape(-1)))  # [g·k]
        out = cat_rollouts(parts, pad_token_id)
        out.timings = {key: sum(r.timings[key] for r in drawn) for key in roll.timings}
        n_kept = sum(int(m.sum()) for m in keeps)
        out.sampling = {"rollout/groups_sampled": float(len(drawn) * n_groups),
                        "rollout/sampling_rounds": float(len(drawn) - 1),
                        "rollout/groups_short": float(max(n_groups - n_kept, 0))}
        return out

    return refill
