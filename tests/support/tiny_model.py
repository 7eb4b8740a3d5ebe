"""A tiny Llama-architecture causal LM built locally (no download), loadable by transformers and vLLM.

Byte-level BPE trained with ``tokenizers`` on generated local sentences, a chat template, and a 2-layer
LlamaConfig whose head size (64) suits vLLM's CPU kernels (see STACK.md). Random weights: it generates
gibberish, deterministically for a seed, which is all engine tests need. Building takes a few seconds;
``tiny_model_path()`` caches one per process in a temp dir.
"""

from __future__ import annotations

import os
import random
import tempfile
import threading

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
_SPECIAL = ["<pad>", "<s>", "</s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
_WORDS = ("the a model answer question user replay traffic shard request response token limit rate engine "
          "vector batch cluster worker actor retry error timeout server client quick brown fox jumps over lazy "
          "dog hello world please explain why how what when where which summarize translate write code test").split()

_lock = threading.Lock()
_cached: str | None = None


def _sentences(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        out.append(" ".join(words).capitalize() + rng.choice([".", "?", "!"]))
    return out


def build_tiny_model(directory: str, seed: int = 0) -> str:
    """Build the tokenizer and model into ``directory`` (created if needed); returns the path."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    os.makedirs(directory, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=_SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_sentences(seed=seed), trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   additional_special_tokens=_SPECIAL[3:])
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(directory)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id,
        initializer_range=0.2, torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        # Random weights otherwise collapse onto one special token (decoded as ""): zero the (tied) embedding rows
        # of the special tokens so greedy decoding picks ordinary text and runs to max_tokens.
        model.get_input_embeddings().weight[: len(_SPECIAL)] = 0.0
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(directory)
    return directory


def tiny_model_path() -> str:
    """One tiny model per process (tests use it as a session fixture)."""
    global _cached
    with _lock:
        if _cached is None or not os.path.exists(os.path.join(_cached, "config.json")):
            _cached = build_tiny_model(tempfile.mkdtemp(prefix="baton-tiny-lm-"))
        return _cached
