"""The `transformers` engine: a local causal LM through transformers (development, tests, small GPUs).

Prompts are rendered with the model's chat template (the whole conversation up to the replayed turn), left-padded
and generated ``batch_size`` at a time. A prompt longer than the model's context is an error row, not a failure
of the batch.
"""

from __future__ import annotations

import time

import pandas as pd

from inference.engines.base import EngineStartupError, error_row, normalise_messages, require_input, response_frame
from inference.engines.config import TransformersEngineConfig


class TransformersEngine:
    """Ray Data stage: ``TransformersEngine(config)(batch) -> responses batch``."""

    def __init__(self, config: TransformersEngineConfig):
        self.config = config
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.torch = torch
            self.tokenizer = AutoTokenizer.from_pretrained(config.model)
            self.tokenizer.padding_side = "left"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
            self.model = AutoModelForCausalLM.from_pretrained(config.model).to(config.device).eval()
        except Exception as exc:  # noqa: BLE001 - a start-up failure fails the shard, naming the model
            raise EngineStartupError(f"candidate {config.name!r}: cannot load transformers model {config.model!r}: "
                                     f"{type(exc).__name__}: {exc}") from exc
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        require_input(batch, f"transformers engine {self.config.name!r}")
        cfg, s = self.config, self.config.sampling
        rows: list[dict | None] = [None] * len(batch)
        todo: list[tuple[int, list[int]]] = []
        for i, (rid, msgs) in enumerate(zip(batch["request_id"], batch["messages"])):
            try:
                text = self.tokenizer.apply_chat_template(normalise_messages(msgs, rid), tokenize=False,
                                                          add_generation_prompt=True)
            except Exception as exc:  # noqa: BLE001 - a bad conversation is that row's error
                rows[i] = error_row(rid, cfg.name, "bad_request", f"{type(exc).__name__}: {exc}")
                continue
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) + s.max_tokens > self.max_len:
                rows[i] = error_row(rid, cfg.name, "context_length",
                                    f"prompt of {len(ids)} tokens + max_tokens {s.max_tokens} exceeds {self.max_len}")
                continue
            todo.append((i, ids))
        if s.seed is not None:
            self.torch.manual_seed(s.seed)
        for start in range(0, len(todo), cfg.batch_size):
            chunk = todo[start:start + cfg.batch_size]
            t0 = time.monotonic()
            enc = self.tokenizer.pad({"input_ids": [ids for _, ids in chunk]}, return_tensors="pt").to(cfg.device)
            gen = {"max_new_tokens": s.max_tokens, "pad_token_id": self.tokenizer.pad_token_id}
            if s.temperature > 0:
                gen.update(do_sample=True, temperature=s.temperature, top_p=s.top_p)
            else:
                gen.update(do_sample=False)
            with self.torch.no_grad():
                out = self.model.generate(**enc, **gen)
            latency = time.monotonic() - t0
            width = enc["input_ids"].shape[1]
            for (i, ids), seq in zip(chunk, out):
                new = seq[width:].tolist()
                eos = self.tokenizer.eos_token_id
                finish = "length"
                if eos is not None and eos in new:
                    new = new[: new.index(eos)]
                    finish = "stop"
                new = [t for t in new if t != self.tokenizer.pad_token_id]
                rows[i] = {"request_id": str(batch["request_id"].iat[i]), "model": cfg.name,
                           "response": self.tokenizer.decode(new, skip_special_tokens=True),
                           "prompt_tokens": len(ids), "completion_tokens": len(new), "latency_s": latency,
                           "finish_reason": finish, "attempts": 1, "error": None}
        return response_frame(rows)
