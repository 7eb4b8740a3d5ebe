"""Replay mode ``conversation`` on Ray: whole conversations to one candidate, the candidate writing every turn.

The traffic's turns (``conversation_id``, ``turn``, ``messages`` = the logged history up to the turn's user message)
are checked first (inference.engines.conversation.check_conversations: turns 1..n each once, turn k with k user
messages; a bad table is a ContractError, exit 2, before any model is loaded). Conversations are dealt to
``num_actors`` Ray actors, whole (a conversation's turns depend on each other, so they never split), each actor
building the candidate's engine once and running its conversations turn round by turn round
(inference.engines.conversation.ConversationEngine). The result has one row per turn, checked against the
responses contract, plus ``conversation_id``, ``turn`` and ``messages_sent``.

Not yet wired into ``jobs.replay``'s sharded, resumable stage (issue 17): this runs one traffic table in memory.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from inference.engines.conversation import ConversationEngine, check_conversations
from jobs.contracts import RESPONSE_COLUMNS, validate_responses
from jobs.errors import ContractError


class _ConversationActor:
    def __init__(self, candidate: dict):
        from pydantic import TypeAdapter

        from inference.engines import CandidateConfig, make_engine

        cfg = TypeAdapter(CandidateConfig).validate_python(candidate)
        self.engine = ConversationEngine(make_engine(cfg), cfg.name)

    def run(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = self.engine(batch)
        out["conversation_id"] = batch["conversation_id"].to_numpy()
        out["turn"] = pd.to_numeric(batch["turn"]).astype(int).to_numpy()
        return out


def replay_conversations(traffic: pd.DataFrame, candidate: dict, num_actors: int = 2,
                         source: str = "traffic") -> pd.DataFrame:
    """Conversation-mode responses of ``candidate`` (a candidate config as a dict) to every turn of ``traffic``."""
    import ray

    try:
        check_conversations(traffic, source)
    except ValueError as exc:
        raise ContractError(str(exc)) from exc
    traffic = traffic.reset_index(drop=True)
    convs = pd.unique(traffic["conversation_id"])
    groups = [g for g in np.array_split(np.arange(len(convs)), max(1, min(num_actors, len(convs)))) if len(g)]
    actor_cls = ray.remote(num_cpus=1)(_ConversationActor)
    actors = [actor_cls.remote(candidate) for _ in groups]
    parts = ray.get([a.run.remote(traffic[traffic["conversation_id"].isin(convs[g])])
                     for a, g in zip(actors, groups)])
    for a in actors:
        ray.kill(a)
    out = pd.concat(parts, ignore_index=True)
    checked = validate_responses(out, source=f"candidate {candidate.get('name')!r} (conversation mode)")
    if len(checked.quarantine):
        raise ContractError(f"candidate {candidate.get('name')!r}: {len(checked.quarantine)} response row(s) break "
                            f"the responses contract: {checked.quarantine['reason'].iloc[0]}")
    want, got = Counter(traffic["request_id"].astype(str)), Counter(out["request_id"].astype(str))
    if want != got:
        raise ContractError(f"candidate {candidate.get('name')!r}: conversation replay did not answer every turn "
                            f"once (missing {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]})")
    return out[RESPONSE_COLUMNS + ["conversation_id", "turn", "messages_sent", "round"]]
