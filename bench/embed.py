"""Moved: prompt embeddings are part of the routing-quality evaluation, `disrouter.evaluation.embed`.

This alias stays only because `training/report.py` still imports `make_embedder` from here and
training/ is being edited on another branch; switch that import to `disrouter.evaluation.embed`
and delete this file. tests/unit/test_layout.py fails once nothing imports it any more.
"""

from disrouter.evaluation.embed import CachedEmbedder, Embedder, HashingEmbedder, MiniLMEmbedder, make_embedder

__all__ = ["CachedEmbedder", "Embedder", "HashingEmbedder", "MiniLMEmbedder", "make_embedder"]
