"""Tiny, seeded, randomly initialised models built from a config in-process (no downloads).

Unit tests and the web tests run on these (ARCHITECTURE.md practice 8, after circuit-tracer's tests on a
2-layer model). Each architecture family the adapters support has a config here; the tokenizer is a
word-level one over a fixed vocabulary, so prompts and targets behave like real ones.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    PhiConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen3Config,
)

from app.engine.loading import Loaded, state_dict_hash

WORDS = ["the", "a", "an", "of", "to", "in", "is", "was", "and", "on", "for", "with", "as", "by", "at", "from", "that", "this", "it", "he", "she", "they", "we", "you", "i", "cat", "dog", "bird", "fish", "horse", "mouse", "lion", "tiger", "bear", "wolf", "fox", "cow", "sheep", "paris", "london", "berlin", "rome", "madrid", "tokyo", "france", "england", "germany", "italy", "spain", "japan", "capital", "city", "red", "green", "blue", "yellow", "black", "white", "big", "small", "hot", "cold", "good", "bad", "new", "old", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "run", "runs", "ran", "eat", "eats", "ate", "see", "sees", "saw", "go", "goes", "went", "come", "comes", "came", "king", "queen", "man", "woman", "boy", "girl", "child", "water", "fire", "earth", "air", "sun", "moon", "star", "is", "are", "be", "not", "no", "yes", "what", "where", "when", "who", "why", "how", ".", ",", "!", "?"]

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gpt2", "gpt_neox", "phi")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer over WORDS, with <unk>, <bos> and <eos> special tokens."""
    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2}
    for word in WORDS:
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##")
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<eos>")


def tiny_config(family: str, vocab_size: int, *, layers: int = 3, width: int = 32, ff: int = 64):
    """A small config of the given family: ``layers`` blocks, d_model ``width``, d_ff ``ff``."""
    common = {"vocab_size": vocab_size, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    gated = dict(hidden_size=width, intermediate_size=ff, num_hidden_layers=layers, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.15,
                 tie_word_embeddings=True, **common)
    if family == "llama":
        return LlamaConfig(**gated)
    if family == "mistral":
        return MistralConfig(**gated)
    if family == "qwen2":
        return Qwen2Config(**gated)
    if family == "qwen3":
        return Qwen3Config(head_dim=8, **gated)
    if family == "gemma":
        return GemmaConfig(head_dim=8, **gated)
    if family == "gpt2":
        return GPT2Config(n_embd=width, n_inner=ff, n_layer=layers, n_head=4, n_positions=256,
                          initializer_range=0.15, **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(hidden_size=width, intermediate_size=ff, num_hidden_layers=layers,
                             num_attention_heads=4, max_position_embeddings=256, initializer_range=0.15, **common)
    if family == "phi":
        return PhiConfig(hidden_size=width, intermediate_size=ff, num_hidden_layers=layers, num_attention_heads=4,
                         max_position_embeddings=256, initializer_range=0.15, **common)
    raise ValueError(f"no tiny config for family '{family}'; choose from {', '.join(FAMILIES)}")


def tiny_loaded(family: str = "llama", seed: int = 0, **sizes) -> Loaded:
    """Build a seeded tiny model of ``family`` with its tokenizer, frozen and in eval mode."""
    tokenizer = tiny_tokenizer()
    config = tiny_config(family, len(tokenizer), **sizes)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    model.eval().requires_grad_(False)
    return Loaded(model, tokenizer, f"tiny-{family}-s{seed}", state_dict_hash(model))
