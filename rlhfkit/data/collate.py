"""Tokenising and padding: prompt templating, (prompt, response) blocks for causal LMs with their loss masks,
packing, and the one preference collator (chosen and rejected stacked into one batch).

A causal-LM batch is laid out as `[left-padded prompt block ; right-padded response block]`, so the
response block starts at the same column P in every row. `models.policy.response_logprobs` reads log-probs of
the response block only; `mask` says which of its tokens count (1.0 on the response and its EOS, 0.0 on
padding).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.data.readers import Prompt, prompt_text


def template_prompts(tokenizer, prompts: list[Prompt],
                     use_chat_template: bool = True) -> tuple[list[str], bool]:
    """Prompt texts ready to tokenise, and whether the tokenizer should add its special tokens.

    With a chat template (and `use_chat_template`): the messages (a text prompt is one user turn) rendered
    with the generation prompt (`<|im_start|>assistant\\n`), special tokens already in the text. Otherwise the
    plain prompt text (`readers.prompt_text`) and the tokenizer's own special tokens (e.g. BOS)."""
    if use_chat_template and tokenizer.chat_template:
        texts = [
            tokenizer.apply_chat_template(
                list(p) if isinstance(p, tuple) else [{"role": "user", "content": p}],
                add_generation_prompt=True, tokenize=False,
            )
            for p in prompts
        ]
        return texts, False
    return [prompt_text(p) for p in prompts], True


# the assistant turn's content while `template_env_turn` renders around it: letters only, so a template that
# trims or escapes content leaves it as it is
_ASSISTANT_PLACEHOLDER = "rlhfkitassistantturnplaceholder"


def template_env_turn(tokenizer, messages: list[dict], observation: list[dict], turn_ended: bool,
                      use_chat_template: bool = True) -> str:
    """The text between a policy turn's sampled tokens and the next policy turn (multi-turn rollouts,
    `rlhfkit.envs`): what closes the assistant turn, the environment's observation messages, and the next
    generation prompt, as the chat template renders them after `messages` (the conversation before that
    assistant turn). The assistant turn is rendered with placeholder content and only the text after it is
    kept, so the policy's sampled tokens are never re-tokenised; a sampled EOS that the template's
    end-of-turn starts with is not repeated (`turn_ended`). SmolLM2: `<|im_end|>` sampled, then
    "\\n<|im_start|>user\\n<result>21</result><|im_end|>\\n<|im_start|>assistant\\n". Without a chat template:
    each observation's content on a line of its own, then a newline."""
    if use_chat_template and tokenizer.chat_template:
        rendered = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": _ASSISTANT_PLACEHOLDER}, *observation],
            add_generation_prompt=True, tokenize=False)
        tail = rendered[rendered.index(_ASSISTANT_PLACEHOLDER) + len(_ASSISTANT_PLACEHOLDER):]
        eos = tokenizer.eos_token
        return tail[len(eos):] if turn_ended and eos and tail.startswith(eos) else tail
    return "".join("\n" + message["content"] for message in observation) + "\n"


@dataclass(frozen=True)
class Completion:
    """One tokenised example: the prompt block, the response block and which response tokens count."""

    prompt_ids: list[int]
    response_ids: list[int]
    mask: list[int]  # per response token: 1 = in the loss


def tokenize_completions(tokenizer, prompts: list[Prompt], responses: list[str], *,
                         use_chat_template: bool = True, max_length: int = 256,
                         completion_only: bool = True) -> list[Completion]:
    """Tokenise each (prompt, response) as templated prompt + response tokens + EOS.

    Too long: the response keeps at least max_length // 2 tokens (its start; EOS is then cut off) and the
    prompt keeps its end (where the generation prompt sits). `completion_only=False`: every token after the
    first counts, so only the first prompt token stays in the prompt block (nothing predicts it)."""
    texts, add_special = template_prompts(tokenizer, prompts, use_chat_template)
    prompt_ids = tokenizer(texts, add_special_tokens=add_special)["input_ids"]
    response_ids = tokenizer(list(responses), add_special_tokens=False)["input_ids"]
    out = []
    for p, r in zip(prompt_ids, response_ids, strict=True):
        r = r + [tokenizer.eos_token_id]
        r_keep = min(len(r), max(max_length - len(p), max_length // 2))
        p_keep = min(len(p), max_length - r_keep)
        p, r = p[len(p) - p_keep:], r[:r_keep]
        assert p, "a prompt tokenised to no tokens"
        if not completion_only:
            p, r = p[:1], p[1:] + r
        out.append(Completion(p, r, [1] * len(r)))
    return out


def pack_completions(examples: list[Completion], max_length: int) -> list[Completion]:
    """Packing: concatenate the examples (each ends with EOS) and cut the stream into blocks of max_length.

    Each block is one row: its first token is the prompt block, the rest the response block, and each token
    keeps its example's mask (so --completion-only still holds). Attention is not reset at example boundaries:
    an example may see the end of the previous one as context (the simple packing of Raffel et al. 2020).
    Blocks in which no token counts are dropped."""
    ids: list[int] = []
    counts: list[int] = []
    for ex in examples:
        ids += ex.prompt_ids + ex.response_ids
        counts += [0] * len(ex.prompt_ids) + ex.mask
    blocks = []
    for start in range(0, len(ids) - 1, max_length):
        block, block_counts = ids[start:start + max_length], counts[start:start + max_length]
        if len(block) > 1 and any(block_counts[1:]):
            blocks.append(Completion(block[:1], block[1:], block_counts[1:]))
    return blocks


def pad_completions(examples: list[Completion], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Left-pad the prompt blocks to P, right-pad the response blocks to T.

    Returns: input_ids [N, P+T], attention_mask [N, P+T], response_ids [N, T] (pad after the end) and
    mask [N, T] float (1.0 on the response tokens that count, 0.0 on padding)."""
    p_len = max(len(ex.prompt_ids) for ex in examples)
    t_len = max(len(ex.response_ids) for ex in examples)
    input_ids = torch.full((len(examples), p_len + t_len), pad_token_id, dtype=torch.long)  # [N, P+T]
    attention_mask = torch.zeros_like(input_ids)  # [N, P+T]
    mask = torch.zeros(len(examples), t_len)  # [N, T]
    for i, ex in enumerate(examples):
        p, r = len(ex.prompt_ids), len(ex.response_ids)
        input_ids[i, p_len - p:p_len + r] = torch.tensor(ex.prompt_ids + ex.response_ids)
        attention_mask[i, p_len - p:p_len + r] = 1
        mask[i, :r] = torch.tensor(ex.mask, dtype=torch.float32)
    return {"input_ids": input_ids, "attention_mask": attention_mask,
            "response_ids": input_ids[:, p_len:], "mask": mask}


def encode_completions(tokenizer, prompts: list[Prompt], responses: list[str],
                       **kw) -> dict[str, torch.Tensor]:
    """`tokenize_completions` then `pad_completions`: one padded causal-LM batch of N (prompt, response)."""
    return pad_completions(tokenize_completions(tokenizer, prompts, responses, **kw), tokenizer.pad_token_id)


def collate_preferences(encode, pairs) -> dict[str, torch.Tensor]:
    """Stack chosen then rejected so one forward pass scores both (the reward model's and DPO's collator).

    Args: encode(prompts, responses) -> dict of tensors with N rows (the reward model's own tokenisation,
          or `encode_completions` for a causal LM); pairs: list of PreferencePair (B of them).
    Returns: the encoding of 2B texts (rows 0..B-1 chosen, B..2B-1 rejected) plus `margin` [B]."""
    prompts = [p.prompt for p in pairs]
    batch = dict(encode(prompts + prompts, [p.chosen for p in pairs] + [p.rejected for p in pairs]))
    batch["margin"] = torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32)  # [B]
    return batch
