"""The embedders: the real MiniLM model from its wheel, offline, and the on-disk cache."""

import numpy as np

from disrouter.evaluation.embed import CachedEmbedder, HashingEmbedder, MiniLMEmbedder


def test_minilm_loads_offline_from_its_wheel_and_embeds_by_meaning(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # any hub access would fail loudly
    vectors = MiniLMEmbedder().encode([
        "How many eggs does the duck lay per day?",
        "What is the daily number of eggs a duck lays?",
        "Prove that the integral of a continuous function is continuous.",
    ])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    same, different = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert same > different + 0.3


class Counting:
    def __init__(self):
        self.inner, self.name, self.calls = HashingEmbedder(), "counting", []

    def encode(self, texts):
        self.calls.append(list(texts))
        return self.inner.encode(texts)


def test_the_cache_encodes_each_text_once_and_persists(tmp_path):
    first = Counting()
    cached = CachedEmbedder(first, tmp_path)
    a = cached.encode(["alpha beta", "gamma delta", "alpha beta"])
    assert first.calls == [["alpha beta", "gamma delta"]]
    assert np.array_equal(a[0], a[2])
    second = Counting()
    again = CachedEmbedder(second, tmp_path).encode(["gamma delta", "epsilon"])
    assert second.calls == [["epsilon"]]  # the rest came from disk
    assert np.array_equal(again[0], a[1])
