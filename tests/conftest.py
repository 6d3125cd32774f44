"""Shared fixtures: a tiny Qwen2 and a character tokenizer, built locally (no hub)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, models, pre_tokenizers  # noqa: E402
from transformers import PreTrainedTokenizerFast  # noqa: E402

from gift_lite.models import TinyModelConfig, tiny_qwen2  # noqa: E402

CHARS = list("0123456789+-*/=,:> abcdefghij")
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]


def char_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIALS + CHARS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


@pytest.fixture(scope="session")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tokenizer):
    """A saved tiny Qwen2 (random weights) that loads like a hub model, with its tokenizer."""
    path = tmp_path_factory.mktemp("tiny_qwen2")
    cfg = TinyModelConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                          max_position_embeddings=64)
    model = tiny_qwen2(cfg, seed=0)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def sft_rows():
    """Prompt–completion rows in TRL's format (EOS is appended by the trainer)."""
    rows = [("3 5 7>26:", "5*7=35,35-3=32"), ("2 4 6>12:", "2+4=6,6+6=12"),
            ("1 8 9>72:", "8*9=72,72*1=72"), ("2 3 5>30:", "2*3=6,6*5=30")]
    return [{"prompt": p, "completion": c} for p, c in rows]


def assert_finite(x: torch.Tensor) -> None:
    assert torch.isfinite(x).all(), x
