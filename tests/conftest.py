"""Shared fixtures: tiny random models with a tiny word-level tokenizer, built in the test (no downloads), and
the device the tests run on.

RLHFKIT_TEST_DEVICE picks it: `cpu` hides every GPU (CUDA_VISIBLE_DEVICES="", set here before torch looks
for one), so trainers, `default_device()` and the `device` fixture all use the CPU; `cuda` requires a GPU;
unset or `auto`: a GPU when there is one (trainers take it from accelerate), else the CPU."""

from __future__ import annotations

import os

import pytest

TEST_DEVICE = os.environ.get("RLHFKIT_TEST_DEVICE", "auto")
if TEST_DEVICE == "cpu":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

WORDS = (
    "the a is are good bad great terrible happy sad i you we it this that and or not very so "
    "cat dog sun moon sea tree book code data learn model love hate like nice awful fine "
    "yes no maybe thanks please help answer question explain write poem story short long "
    "one two three four five six seven eight nine ten red blue green fast slow big small"
).split()
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "[UNK]", "[CLS]", "[SEP]"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }} {{ m['content'] }}<|im_end|> {% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)


def make_tokenizer(kind: str = "llama"):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit()])
    if kind == "bert":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
        )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="<|endoftext|>",
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
        cls_token="[CLS]" if kind == "bert" else None,
        sep_token="[SEP]" if kind == "bert" else None,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def save_tiny_llama(path, seed: int = 0, **overrides):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    tok = make_tokenizer("llama")
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True, **overrides,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def save_tiny_bert(path, seed: int = 0):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    tok = make_tokenizer("bert")
    cfg = BertConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=256, pad_token_id=tok.pad_token_id, num_labels=1,
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def pytest_configure(config):
    import torch

    if TEST_DEVICE not in ("auto", "cpu", "cuda"):
        raise pytest.UsageError(f"RLHFKIT_TEST_DEVICE={TEST_DEVICE!r}: expected auto, cpu or cuda")
    if TEST_DEVICE == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("RLHFKIT_TEST_DEVICE=cuda, but torch sees no GPU (torch.cuda.is_available())")


def pytest_report_header(config):
    from rlhfkit.device import default_device

    return f"rlhfkit test device: {default_device()} (RLHFKIT_TEST_DEVICE={TEST_DEVICE})"


@pytest.fixture(scope="session")
def device():
    """The device tests put the models they build on: where the trainers put theirs (`default_device()`)."""
    from rlhfkit.device import default_device

    return default_device()


def requires_gpus(n: int):
    """Skip a test that needs `n` GPUs when fewer exist, saying how many were found."""
    import torch

    found = torch.cuda.device_count()
    return pytest.mark.skipif(found < n, reason=f"needs {n} GPUs, found {found}")


@pytest.fixture(autouse=True, scope="session")
def _offline():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
