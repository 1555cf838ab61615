"""The policy and its value function: per-token log-probs and values of sampled responses in one pass."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from rlhfkit.losses import entropy_from_logits


def trunk_and_head(lm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """(transformer trunk, LM head) of a causal LM, looking through a peft wrapper (adapters stay active)."""
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return getattr(base, base.base_model_prefix), base.get_output_embeddings()


def position_ids_for(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, exactly as `generate` computes them (else log-probs drift)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [B, L]


def response_hidden(trunk: nn.Module, input_ids, attention_mask, prompt_len: int) -> torch.Tensor:
    """Hidden states that predict each response token: positions P-1 .. P+T-2 of [prompt ; response]."""
    out = trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_for(attention_mask))
    return out.last_hidden_state[:, prompt_len - 1 : -1]  # [B, T, H]


LOGIT_ROWS = 8  # sequences per chunk of the vocabulary projection (SmolLM2, 48 tokens: 8·48·49152·4 B = 75 MB)


def token_logprobs(head: nn.Module, hidden, response_ids, temperature: float = 1.0, with_entropy: bool = False,
                   entropy_grad: bool = False, checkpoint_chunks: bool = False, rows: int = LOGIT_ROWS):
    """log π(y_t | x, y_<t) = z_t[y_t] − logsumexp(z_t), z = head(h) / τ; only response positions reach the
    vocabulary projection, and it runs over chunks of `rows` sequences, so no [B, T, V] tensor exists at once
    outside autograd (the no-grad passes for log π_old / log π_ref).

    Under autograd every chunk's logits are saved for the backward pass ([B, T, V] fp32 in all) unless
    `checkpoint_chunks`: then each chunk is checkpointed and its logits recomputed in the backward pass (one
    extra vocabulary projection: the head's forward + backward took 1.03-1.22x as long, for 0.85-0.87x its peak
    memory at 32 x 48 tokens, bench/logprob_memory.py).
    The entropy is a metric unless `entropy_grad` (an entropy bonus): only then does it join the autograd graph.
    Returns: (logprobs [B, T], entropy [B, T] or None)."""
    def chunk(h, y):
        logits = head(h).float() / temperature  # [rows, T, V]
        logprobs = logits.gather(-1, y.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)  # [rows, T]
        if not with_entropy:
            return logprobs, None
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            return logprobs, entropy_from_logits(logits)  # [rows, T]

    recompute = checkpoint_chunks and torch.is_grad_enabled()
    parts = [checkpoint(chunk, hidden[i:i + rows], response_ids[i:i + rows], use_reentrant=False) if recompute
             else chunk(hidden[i:i + rows], response_ids[i:i + rows]) for i in range(0, hidden.shape[0], rows)]
    logprobs = torch.cat([lp for lp, _ in parts])  # [B, T]
    return logprobs, torch.cat([e for _, e in parts]) if with_entropy else None


def response_logprobs(lm: nn.Module, input_ids, attention_mask, response_ids, temperature: float = 1.0,
                      checkpoint_chunks: bool = False):
    """log π(y_t | x, y_<t) [B, T] of the response block of `[left-padded prompt ; response]` ([B, P+T])."""
    trunk, head = trunk_and_head(lm)
    prompt_len = input_ids.shape[1] - response_ids.shape[1]
    hidden = response_hidden(trunk, input_ids, attention_mask, prompt_len)  # [B, T, H]
    return token_logprobs(head, hidden, response_ids, temperature, checkpoint_chunks=checkpoint_chunks)[0]


class Policy(nn.Module):
    """π_θ alone, for the offline trainers (SFT, DPO): one call gives response log-probs, so the forward goes
    through accelerate's wrappers (DDP gradient sync, autocast). `lm` may be a peft model.

    `checkpoint_head` (set with --gradient-checkpointing): under autograd the vocabulary projection's chunks
    are checkpointed (`token_logprobs`), so their logits are freed after the forward pass and recomputed in
    the backward pass. Once the trunk's activations are checkpointed, those logits are the largest tensors
    left (measured: DPO peak RSS 4.0 -> 3.6 GB, bench/dpo_vs_trl.py)."""

    def __init__(self, lm: nn.Module, checkpoint_head: bool = False):
        super().__init__()
        self.lm = lm
        self.checkpoint_head = checkpoint_head

    def forward(self, input_ids, attention_mask, response_ids) -> torch.Tensor:
        """log π(y_t | x, y_<t) [B, T], temperature 1."""
        return response_logprobs(self.lm, input_ids, attention_mask, response_ids,
                                 checkpoint_chunks=self.checkpoint_head)


def completion_logprobs(policy: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Per-token log-probs [B, T] of a `data.collate.encode_completions` batch (SFT's NLL is −mean over mask).

    Args: policy: a `Policy` (possibly wrapped by accelerate); batch: input_ids, attention_mask and
        response_ids as built by `encode_completions`."""
    return policy(batch["input_ids"], batch["attention_mask"], batch["response_ids"])  # [B, T]


def sequence_logprobs(policy: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed response log-probs log π(y|x) = Σ_t mask_t · log π(y_t | x, y_<t), and the counted tokens |y|.

    Returns: (summed_logps [B], n_tokens [B] float)."""
    mask = batch["mask"]  # [B, T]
    return (completion_logprobs(policy, batch) * mask).sum(1), mask.sum(1)


class ValueHead(nn.Module):
    """V(s_t): a scalar per position from a hidden state. Zero-initialised, so V = 0 at step 0."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)  # [B, T]


class ActorCritic(nn.Module):
    """π_θ and V_ψ. Default: a value head on the policy trunk (one forward pass gives both; CPU-friendly,
    the losses share the trunk, so c_v is kept small). With `critic` (a sequence-classification model that
    shares the policy's tokenizer): a separate trunk and its scalar head (twice the compute, decoupled).
    `with_value=False`: the policy alone (the critic-free trainers); values are then None.
    `checkpoint_head` (set with --gradient-checkpointing): the vocabulary projection's chunks are checkpointed
    too (`token_logprobs`)."""

    def __init__(self, lm: nn.Module, critic: nn.Module | None = None, with_value: bool = True,
                 checkpoint_head: bool = False):
        super().__init__()
        self.lm = lm
        self.critic = critic
        self.checkpoint_head = checkpoint_head
        if not with_value:
            self.value_head = None
        elif critic is None:
            self.value_head = ValueHead(lm.config.hidden_size)
        else:
            self.critic_trunk = getattr(critic, critic.base_model_prefix)
            self.value_head = critic.score if hasattr(critic, "score") else critic.classifier

    def forward(self, input_ids, attention_mask, prompt_len: int, response_ids, temperature: float,
                with_entropy: bool = False, entropy_grad: bool = False):
        """Returns (logprobs [B, T], values [B, T] or None, entropy [B, T] or None) for the response tokens."""
        trunk, head = trunk_and_head(self.lm)
        hidden = response_hidden(trunk, input_ids, attention_mask, prompt_len)  # [B, T, H]
        logprobs, entropy = token_logprobs(head, hidden, response_ids, temperature, with_entropy, entropy_grad,
                                           checkpoint_chunks=self.checkpoint_head)
        if self.value_head is None:
            return logprobs, None, entropy
        if self.critic is not None:
            hidden = response_hidden(self.critic_trunk, input_ids, attention_mask, prompt_len)
        values = self.value_head(hidden).float()  # [B, T] (a classifier head returns [B, T] after squeeze)
        return logprobs, values.squeeze(-1) if values.dim() == 3 else values, entropy
