"""The shared training loop: accumulated micro-batches make the same step as one batch, and the schedule
counts optimiser steps, not micro-batches."""

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from rlhfkit import losses
from rlhfkit.config import SFTConfig, build
from rlhfkit.trainers import loop
from rlhfkit.trainers.sft import train_sft

WORDS = "the cat dog sun moon sea tree book good bad".split()


def token_batch(seed: int, b: int = 8, t: int = 5):
    """x [b, t, 3] and a right-padded mask [b, t] with 1..t tokens per row: rows hold unequal token counts."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, 3, generator=g)  # [b, t, 3]
    lengths = torch.randint(1, t + 1, (b,), generator=g)  # [b]
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()  # [b, t]
    return x, mask


def sgd_learner():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)  # w ← w − g: the weights show the gradient
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return loop.Learner(loop.make_accelerator("fp32"), model, optimizer, scheduler, max_grad_norm=0.0)


def token_mean_loss(learner):
    def loss_fn(mb):
        x, mask = mb
        loss = losses.masked_mean((learner.model(x).squeeze(-1) - 1.0) ** 2, mask)  # []
        return loss, {"loss": loss.item()}

    return loss_fn


def weights_after_one_step(micro_batches) -> torch.Tensor:
    learner = sgd_learner()
    result = loop.accumulate_step(learner, micro_batches, token_mean_loss(learner), lambda mb: mb[1].sum())
    assert not result.skipped and len(result.rows) == len(micro_batches)
    return torch.cat([p.detach().flatten() for p in learner.model.parameters()])


def test_two_micro_batches_of_4_equal_one_batch_of_8():
    x, mask = token_batch(0)
    assert mask[:4].sum() != mask[4:].sum()  # unequal token counts: a mean of the two means would be wrong
    one = weights_after_one_step([(x, mask)])
    two = weights_after_one_step([(x[:4], mask[:4]), (x[4:], mask[4:])])
    assert torch.allclose(one, two, atol=1e-6, rtol=0)
    # the naive rule (each micro-batch's mean weighs 1/k) gives another step on this batch
    learner = sgd_learner()
    fn = token_mean_loss(learner)
    naive = (fn((x[:4], mask[:4]))[0] + fn((x[4:], mask[4:]))[0]) / 2
    naive.backward()
    naive_step = torch.cat([(p - p.grad).detach().flatten() for p in learner.model.parameters()])
    assert (naive_step - one).abs().max() > 1e-3


def test_a_non_finite_loss_skips_the_whole_step():
    x, mask = token_batch(1)
    learner = sgd_learner()
    before = [p.detach().clone() for p in learner.model.parameters()]
    fn = token_mean_loss(learner)

    def nan_in_first(mb):
        loss, metrics = fn(mb)
        return (loss * float("nan"), metrics) if mb[0] is x_first else (loss, metrics)

    x_first = x[:4]
    result = loop.accumulate_step(learner, [(x_first, mask[:4]), (x[4:], mask[4:])], nan_in_first,
                                  lambda mb: mb[1].sum())
    assert result.skipped and result.grad_norm != result.grad_norm  # nan
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    assert all(p.grad is None for p in learner.model.parameters())  # nothing carried into the next step
    assert learner.scheduler.last_epoch == 0  # the schedule did not move either


def test_a_non_finite_gradient_skips_the_step():
    """A finite loss can still give an infinite gradient: d/dw √(w − w₀) = ∞ at w = w₀ (the loss is 0)."""
    x, mask = token_batch(2)
    learner = sgd_learner()
    before = [p.detach().clone() for p in learner.model.parameters()]

    def loss_fn(mb):
        w = learner.model.weight
        return torch.sqrt(w - w.detach()).sum() + 0 * learner.model(mb[0]).sum(), {}

    result = loop.accumulate_step(learner, [(x, mask)], loss_fn, lambda mb: mb[1].sum())
    assert result.skipped and result.grad_norm == float("inf")
    assert all(torch.equal(a, b) for a, b in zip(before, learner.model.parameters()))
    assert learner.scheduler.last_epoch == 0


def write_demos(path, n, seed=0):
    """Two-word prompts answered with 1–4 words: responses of unequal token counts."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            response = " ".join(rng.choices(WORDS, k=rng.randint(1, 4)))
            f.write(json.dumps({"prompt": " ".join(rng.sample(WORDS, 2)), "response": response}) + "\n")
    return str(path)


def sft_run(tiny_llama, tmp_path, name, **kw):
    base = {"model": tiny_llama, "data": write_demos(tmp_path / "train.jsonl", 16),
            "eval_data": write_demos(tmp_path / "eval.jsonl", 4, seed=1), "output": str(tmp_path / name),
            "epochs": 2, "lr": 1e-2, "dtype": "fp32", "log_every": 1, "lora.use_lora": False}
    cfg = build(SFTConfig, {**base, **kw})
    train_sft(cfg)
    rows = [json.loads(x) for x in open(tmp_path / name / "metrics.jsonl")]
    step_rows = [r for r in rows if "epoch" not in r]
    return load_file(str(tmp_path / name / "policy" / "model.safetensors")), step_rows


def test_epoch_loop_accumulation_equals_one_batch_and_keeps_the_schedule(tiny_llama, tmp_path):
    """SFT's token mean (the hard case: micro-batches hold unequal token counts), 2 epochs × 2 optimiser
    steps, AdamW with a linear decay: 2 × 4 accumulated ends at the weights of batches of 8."""
    one, rows_one = sft_run(tiny_llama, tmp_path, "one", batch_size=8)
    two, rows_two = sft_run(tiny_llama, tmp_path, "two", batch_size=4, **{"optim.grad_accum_steps": 2})
    assert len(rows_one) == 4 and len(rows_two) == 8  # one row per batch
    # AdamW divides by √v: on the few coordinates whose gradient is near its eps (1e-8), fp32 rounding of a
    # differently padded batch moves the update by up to 3e-5 (measured); weighting each micro-batch's mean by
    # 1/2 instead of by its tokens moved the weights by 0.03-0.05 (measured)
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-4
    # the schedule: 4 optimiser steps, warm-up 0.1·4 → 0 steps, then lr_j = 1e-2 · (1 − j/4), j = 0..3,
    # each used by both micro-batches of its step (stepping per micro-batch reached 0 after 4 of the 8)
    expected = [1e-2 * (1 - j / 4) for j in range(4)]
    assert [r["sft/lr"] for r in rows_one] == pytest.approx(expected, abs=1e-12)
    twice = [lr for lr in expected for _ in (0, 1)]
    assert [r["sft/lr"] for r in rows_two] == pytest.approx(twice, abs=1e-12)
    # the gradient norm exists once per optimiser step: on its last micro-batch
    assert [r["sft/grad_norm"] is None for r in rows_two] == [True, False] * 4


def test_each_process_samples_from_its_own_seed():
    """Process r > 0 re-seeds at seed + r·100003 (ALGORITHMS.md §5); process 0, and so a one-process run,
    keeps the stream it has after building the models under `seed_everything(seed)` (offset 0)."""
    from types import SimpleNamespace

    loop.seed_everything(7)
    torch.rand(3)  # the stream some way along, as after building the models
    along = torch.get_rng_state(), random.getstate()
    loop.seed_sampling(7, SimpleNamespace(process_index=0))
    assert torch.equal(torch.get_rng_state(), along[0]) and random.getstate() == along[1]
    loop.seed_sampling(7, SimpleNamespace(process_index=1))
    rank1 = torch.rand(3), random.random()
    loop.seed_everything(7 + 100003)
    assert torch.equal(torch.rand(3), rank1[0]) and random.random() == rank1[1]
