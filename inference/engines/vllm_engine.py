"""The `vllm` engine: a self-hosted open-weight model through vLLM, one engine per Ray actor (a replica).

Replicas scale across GPUs as an actor pool (data parallel: ``replicas`` actors of ``num_gpus`` each); inside a
replica ``tensor_parallel_size`` shards the model over that actor's GPUs (vLLM's multiprocessing executor).
A batch is rendered with the chat template (the model's, or ``chat_template`` from a file), tokenised once
(so prompt lengths are checked up front: a prompt too long for ``max_model_len`` is that row's error), and
handed to ``LLM.generate`` whole, which batches continuously.

Failure is loud: an engine that does not start within ``startup_timeout_s``, or raises while starting, raises
EngineStartupError; an engine that dies while generating raises EngineDeadError, also when its engine-core process
is killed (a watchdog, see ``VLLMEngine.generate``). Either fails the shard (the shard task is not retried for
application errors), never hangs.
"""

from __future__ import annotations

import threading
import time

import pandas as pd

from inference.engines.base import (EngineDeadError, EngineStartupError, error_row, normalise_messages,
                                    require_input, response_frame)
from inference.engines.config import VLLMEngineConfig


def start_llm(config: VLLMEngineConfig):
    """Start ``vllm.LLM`` for a config, bounded by ``startup_timeout_s``."""
    box: dict = {}

    def build() -> None:
        try:
            from vllm import LLM

            kwargs = dict(model=config.model, tensor_parallel_size=config.tensor_parallel_size,
                          max_model_len=config.max_model_len, dtype=config.dtype, enforce_eager=config.enforce_eager,
                          load_format=config.load_format, seed=config.sampling.seed or 0)
            if config.tensor_parallel_size > 1:
                kwargs["distributed_executor_backend"] = "mp"  # the actor already holds its GPUs
            box["llm"] = LLM(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised below as a start-up failure
            box["error"] = exc

    thread = threading.Thread(target=build, name=f"vllm-start-{config.name}", daemon=True)
    thread.start()
    thread.join(config.startup_timeout_s)
    if thread.is_alive():
        raise EngineStartupError(f"candidate {config.name!r}: vLLM engine for {config.model!r} did not start within "
                                 f"startup_timeout_s={config.startup_timeout_s}")
    if "error" in box:
        exc = box["error"]
        raise EngineStartupError(f"candidate {config.name!r}: vLLM engine for {config.model!r} failed to start: "
                                 f"{type(exc).__name__}: {str(exc)[:500]}") from exc
    return box["llm"]


def engine_dead(llm) -> bool:
    """Whether vLLM has marked its engine core dead (``resources.engine_dead`` of the multiprocess client; an
    in-process engine has none and raises instead)."""
    core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
    return bool(getattr(getattr(core, "resources", None), "engine_dead", False))


class VLLMEngine:
    """Ray Data stage: ``VLLMEngine(config)(batch) -> responses batch``."""

    def __init__(self, config: VLLMEngineConfig, llm=None):
        self.config = config
        self.llm = llm if llm is not None else start_llm(config)
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_template = None
        if config.chat_template:
            with open(config.chat_template, encoding="utf-8") as fh:
                self.chat_template = fh.read()

    def prompts(self, batch: pd.DataFrame) -> tuple[list[dict | None], list[tuple[int, list[int]]]]:
        """(rows already decided as errors, [(row position, prompt token ids)] to generate)."""
        cfg = self.config
        rows: list[dict | None] = [None] * len(batch)
        todo: list[tuple[int, list[int]]] = []
        for i, (rid, msgs) in enumerate(zip(batch["request_id"], batch["messages"])):
            try:
                text = self.tokenizer.apply_chat_template(normalise_messages(msgs, rid), tokenize=False,
                                                          add_generation_prompt=True, chat_template=self.chat_template)
            except Exception as exc:  # noqa: BLE001 - a conversation the template rejects is that row's error
                rows[i] = error_row(rid, cfg.name, "bad_request", f"{type(exc).__name__}: {exc}")
                continue
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) >= cfg.max_model_len:
                rows[i] = error_row(rid, cfg.name, "context_length",
                                    f"prompt of {len(ids)} tokens does not fit max_model_len={cfg.max_model_len}")
                continue
            todo.append((i, ids))
        return rows, todo

    def sampling_params(self, prompt_len: int):
        from vllm import SamplingParams

        s = self.config.sampling
        # Never ask for more tokens than the context has left: vLLM rejects such a request outright.
        max_tokens = max(1, min(s.max_tokens, self.config.max_model_len - prompt_len))
        return SamplingParams(temperature=s.temperature, top_p=s.top_p, max_tokens=max_tokens, seed=s.seed)

    def generate(self, prompts: list, params: list) -> list:
        """``LLM.generate`` watched by this thread: a dead engine core raises EngineDeadError instead of a hang.

        vLLM's own monitor notices a dead engine-core process and marks the client dead, but its synchronous
        client (vllm 0.32 ``SyncMPClient``) then stops its output thread without waking a ``generate`` that waits
        on it: killed with SIGKILL mid-batch, the call blocked for good (tests/inference/engines). So the call runs
        in a helper thread and this one polls the flag."""
        dead = f"candidate {self.config.name!r}: vLLM engine"
        if engine_dead(self.llm):
            raise EngineDeadError(f"{dead} is dead (its engine-core process exited); restart the replica")
        box: dict = {}

        def run() -> None:
            try:
                box["out"] = self.llm.generate(prompts, params, use_tqdm=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                box["error"] = exc

        worker = threading.Thread(target=run, name=f"vllm-generate-{self.config.name}", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(self.config.watchdog_poll_s)
            if worker.is_alive() and engine_dead(self.llm):
                raise EngineDeadError(f"{dead} died while generating (its engine-core process exited); the "
                                      f"shard fails and is replayed on rerun")
        if "error" in box:  # the engine as a whole failed: fail the shard loudly
            exc = box["error"]
            # vLLM's own client may notice the dead core first and raise its EngineDeadError from generate
            if type(exc).__name__ == "EngineDeadError" or engine_dead(self.llm):
                raise EngineDeadError(f"{dead} died while generating ({type(exc).__name__}: {str(exc)[:300]}); "
                                      f"the shard fails and is replayed on rerun") from exc
            raise EngineDeadError(f"{dead} failed while generating: {type(exc).__name__}: {str(exc)[:500]}") from exc
        return box["out"]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        require_input(batch, f"vllm engine {self.config.name!r}")
        from vllm.inputs import TokensPrompt

        rows, todo = self.prompts(batch)
        if todo:
            t0 = time.monotonic()
            outputs = self.generate([TokensPrompt(prompt_token_ids=ids) for _, ids in todo],
                                    [self.sampling_params(len(ids)) for _, ids in todo])
            latency = time.monotonic() - t0
            if len(outputs) != len(todo):
                raise EngineDeadError(f"candidate {self.config.name!r}: vLLM returned {len(outputs)} outputs "
                                      f"for {len(todo)} prompts")
            for (i, ids), out in zip(todo, outputs):
                comp = out.outputs[0]
                rows[i] = {"request_id": str(batch["request_id"].iat[i]), "model": self.config.name,
                           "response": comp.text, "prompt_tokens": len(ids), "completion_tokens": len(comp.token_ids),
                           "latency_s": latency, "finish_reason": comp.finish_reason, "attempts": 1, "error": None}
        return response_frame(rows)

    def close(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            try:
                llm.llm_engine.engine_core.shutdown()
            except Exception:  # noqa: BLE001 - best effort
                pass
            del llm
