"""Real all-MiniLM-L6-v2 embeddings, offline, through a Ray Data actor pool; similarity on known pairs."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inference.scorers import EMBED_COLUMNS, EmbeddingConfig, Embedder, similarity_scores

PAIRS = [
    # (response, incumbent answer (a paraphrase), reference (unrelated))
    ("The cat is sleeping on the sofa.", "A cat naps on the couch.", "Quarterly revenue grew by eight percent."),
    ("Paris is the capital of France.", "France's capital city is Paris.", "Photosynthesis converts light into sugar."),
    ("Drink plenty of water when you exercise.", "Stay hydrated during workouts.", "The train leaves at 6 pm from platform 4."),
    ("I cannot help with that request.", "Sorry, I can't assist with this.", "Mix the flour with two eggs and milk."),
]


@pytest.fixture(scope="module")
def batch():
    return pd.DataFrame({
        "request_id": [f"r{i}" for i in range(len(PAIRS))] + ["r-null"], "model": "cand",
        "response": [p[0] for p in PAIRS] + [None],
        "incumbent_response": [p[1] for p in PAIRS] + ["Anything."],
        "reference": [p[2] for p in PAIRS] + [None],
    })


@pytest.fixture(scope="module")
def ray_embeddings(ray_cluster, batch):
    import ray

    ds = ray.data.from_pandas(batch).repartition(2).map_batches(
        Embedder, fn_constructor_kwargs={"config": EmbeddingConfig(batch_size=8)}, batch_size=3,
        batch_format="pandas", compute=ray.data.ActorPoolStrategy(size=1), num_cpus=1)
    return ds.to_pandas()


def test_embeddings_through_actor_pool(ray_embeddings, batch):
    emb = ray_embeddings
    assert list(emb.columns) == EMBED_COLUMNS
    # One row per non-null text: 4 responses + 5 incumbent answers + 4 references.
    assert emb.groupby("field").size().to_dict() == {"incumbent_response": 5, "reference": 4, "response": 4}
    assert "r-null" not in set(emb.loc[emb["field"] == "response", "request_id"])
    vec = np.stack(emb["vector"].map(lambda v: np.asarray(v, dtype=np.float32)))
    assert vec.shape[1] == 384
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-4)


def test_similarity_paraphrase_beats_unrelated(ray_embeddings):
    scores = similarity_scores(ray_embeddings).pivot(index="request_id", columns="metric", values="value")
    assert set(scores.index) == {f"r{i}" for i in range(len(PAIRS))}
    inc, ref = scores["embed.sim_incumbent"], scores["embed.sim_reference"]
    assert (inc > ref + 0.3).all(), scores
    assert (inc > 0.5).all() and (ref < 0.3).all(), scores
    assert ((scores >= -1.0001) & (scores <= 1.0001)).all().all()


def test_ray_path_matches_direct_encode_and_parquet_roundtrip(ray_embeddings):
    direct = Embedder(EmbeddingConfig(device="cpu"), fields=["response"])
    assert direct.model_name == "all-MiniLM-L6-v2"
    want = direct.encode([p[0] for p in PAIRS])
    got = ray_embeddings[ray_embeddings["field"] == "response"].set_index("request_id").loc[[f"r{i}" for i in range(len(PAIRS))]]
    np.testing.assert_allclose(np.stack(got["vector"].map(np.asarray)), want, atol=1e-5)
    # The embeddings table is Parquet with a float32 list column; similarity works on what comes back.
    buf = io.BytesIO()
    table = pa.Table.from_pandas(ray_embeddings, preserve_index=False)
    assert table.schema.field("vector").type == pa.list_(pa.float32())
    pq.write_table(table, buf)
    back = pq.read_table(io.BytesIO(buf.getvalue())).to_pandas()
    pd.testing.assert_frame_equal(similarity_scores(back).sort_values(["request_id", "metric"]).reset_index(drop=True),
                                  similarity_scores(ray_embeddings).sort_values(["request_id", "metric"]).reset_index(drop=True),
                                  atol=1e-6)


def test_identical_texts_and_missing_partners():
    emb = pd.DataFrame({"request_id": ["a", "a", "b"], "model": "m", "field": ["response", "incumbent_response", "response"],
                        "vector": [np.array([1, 0], np.float32), np.array([1, 0], np.float32), np.array([0, 2], np.float32)]})
    out = similarity_scores(emb)
    # b has no incumbent vector and nobody has a reference: only one row, and no NaN rows.
    assert out.to_dict("records") == [{"request_id": "a", "model": "m", "metric": "embed.sim_incumbent", "value": 1.0}]


def test_unknown_field_and_bad_model_path(tmp_path):
    with pytest.raises(ValueError, match="'answer'"):
        Embedder(fields=["answer"])
    with pytest.raises(FileNotFoundError, match="embeddings.model"):
        Embedder(EmbeddingConfig(model=str(tmp_path / "nope")))
