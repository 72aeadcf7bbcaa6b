"""The self-awareness pipeline end to end on a tiny causal LM built inside the test.

Every stage runs for real: competence sampling through the vLLM engine, the SFT labels, TRL's
SFTTrainer and GRPOTrainer on LoRA, the report through vLLM serving the adapter, the export
with its card, and the exported adapter served again through the engine a topology uses. The
tiny model knows nothing, so the assertions are about what each stage must do (files, counts,
weights that move, costs that are measured), not about accuracy.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import msgspec
import pytest

from disrouter.training.config import DataConfig, DataSet, LoraConfig, RLConfig, SampleConfig, SFTConfig, TrainConfig
from disrouter.training.pipeline import Run
from disrouter.training.report import competence_cache
from disrouter.training.sampling import read_competence
from tests.training.tiny import build

pytestmark = pytest.mark.llm


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    tmp = tmp_path_factory.mktemp("pipeline")
    model = build(tmp / "tiny")
    cfg = TrainConfig(
        agent="tiny",
        model=str(model),
        out=str(tmp / "run"),
        export_to=str(tmp / "exported"),
        data=DataConfig(sets=[DataSet("arith", limit=120, max_tokens=12)], train_questions=24, eval_questions=8),
        sample=SampleConfig(n=4, temperature=1.0, concurrency=8),
        # Every label kept (`balance: none`): the random model is right by luck on a question or
        # two, so balancing would leave as few examples (one run kept 2 of 72, and GRPO then never
        # sampled the phrase); on all of them it learns to say the reject phrase, whatever the
        # luck. GRPO samples it at a temperature where about 4 in 5 replies are the phrase (all
        # at 0.2, 1 in 13 at 0.5, measured), so its groups mix the phrase with garbage: rewards
        # that differ within a group are what GRPO learns from (an all-equal group has none).
        sft=SFTConfig(epochs=10, learning_rate=5e-3, batch_size=8, save_steps=10, forced_share=0.1, balance="none",
                      lora=LoraConfig(r=8, alpha=16)),
        rl=RLConfig(prompts=24, num_generations=4, batch_size=8, max_completion_length=10, temperature=0.3,
                    learning_rate=1e-3, save_steps=2, balance_decisions=False),
        engine={"max_model_len": 512, "dtype": "float32", "env": {"VLLM_CPU_KVCACHE_SPACE": "1"}},
        dtype="float32",
    )
    return Run(cfg, "tiny.yaml", "disrouter train all tiny.yaml")


def test_sampling_is_graded_cached_and_resumable(run: Run, monkeypatch):
    run.sample()
    records = read_competence(run.competence_path)
    train = [r for r in records.values() if r.split == "train"]
    held_out = [r for r in records.values() if r.split == "test"]
    assert len(train) == 24 and len(held_out) == 8
    for r in records.values():
        assert len(r.samples) == len(r.correct) == 4
        assert r.p == sum(r.correct) / 4 and r.tokens_out > 0
    assert run.costs()["sample"]["tokens_sampled"] == sum(r.tokens_out for r in records.values())

    # Cut the cache as a killed run would (a torn last line): only the missing ones come back.
    lines = run.competence_path.read_bytes().splitlines(keepends=True)
    run.competence_path.write_bytes(b"".join(lines[:-3]) + lines[-3][:20])
    kept = {json.loads(line)["id"] for line in lines[:-3]}
    run.sample()
    again = read_competence(run.competence_path)
    assert set(again) == set(records)
    assert all(again[i] == records[i] for i in kept)  # not sampled a second time

    # A complete cache starts no engine at all.
    import disrouter.actors.engine as engine_module

    monkeypatch.setattr(engine_module, "build_engine", lambda *a, **k: pytest.fail("sampled again"))
    run.sample()


def test_labels_then_sft_trains_the_lora_weights(run: Run):
    run.labels()
    stats = json.loads((run.sft_dir / "stats.json").read_text())
    assert stats["examples"] > 0 and set(stats["per_alpha"]) == {"0.2", "0.5", "0.8"}
    run.sft()
    adapter = run.sft_dir / "adapter"
    weights = tensors(adapter)
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and any(float(v.abs().sum()) > 0 for v in lora_b)  # B starts at zero: SFT moved it
    cost = run.costs()["sft"]
    assert cost["wall_s"] > 0 and cost["tokens_trained"] > 0 and cost["steps"] > 0
    assert (run.sft_dir / "checkpoints").is_dir()


def test_grpo_steps_change_the_adapter(run: Run):
    run.rl()
    before, after = tensors(run.sft_dir / "adapter"), tensors(run.rl_dir / "adapter")
    assert before.keys() == after.keys()
    assert any(not bool((before[k] == after[k]).all()) for k in before)
    cost = run.costs()["rl"]
    assert cost["steps"] > 0 and cost["tokens_sampled"] > 0


def test_expected_reward_grpo_trains_a_given_adapter_further_without_sft(run: Run, tmp_path):
    """`rl.start` + `rl.reward: expected`, the way a gate is trained: no SFT stage, and GRPO moves
    the adapter it starts from, with short rollouts graded by the question's competence."""
    cfg = msgspec.structs.replace(
        run.cfg, out=str(tmp_path / "gate"), export_to=None,
        rl=msgspec.structs.replace(run.cfg.rl, start=str(run.sft_dir / "adapter"), reward="expected", max_completion_length=6),
    )
    gate = Run(cfg, "gate.yaml", "disrouter train all gate.yaml")
    gate.out.mkdir(parents=True)
    shutil.copy(run.competence_path, gate.competence_path)  # the answering model's competence
    gate.labels()
    gate.sft()
    assert not (gate.sft_dir / "adapter").exists() and not (gate.sft_dir / "dataset.jsonl").exists()
    gate.rl()
    before, after = tensors(run.sft_dir / "adapter"), tensors(gate.rl_dir / "adapter")
    assert before.keys() == after.keys()
    assert any(not bool((before[k] == after[k]).all()) for k in before)
    assert gate.final_adapter() == gate.rl_dir / "adapter"
    cost = gate.costs()["rl"]
    # Rollouts stop at max_completion_length: at most 6 tokens a completion, 4 completions a prompt.
    assert 0 < cost["tokens_sampled"] <= 6 * 4 * cfg.rl.prompts


def test_a_gate_dataset_keeps_each_answers_first_tokens_of_the_models_tokenizer(run: Run, tmp_path):
    from disrouter.training import backend
    from disrouter.training.labels import build_examples, read_examples, token_cut

    cfg = msgspec.structs.replace(run.cfg, out=str(tmp_path / "gate"), export_to=None,
                                  sft=msgspec.structs.replace(run.cfg.sft, answer_tokens=2))
    gate = Run(cfg, "gate.yaml", "disrouter train labels gate.yaml")
    gate.out.mkdir(parents=True)
    shutil.copy(run.competence_path, gate.competence_path)
    gate.labels()
    cut = read_examples(gate.sft_dir / "dataset.jsonl")
    whole, _ = build_examples(run.cfg, list(read_competence(run.competence_path).values()))
    tokenizer = backend.load_tokenizer(cfg)
    assert [(e.id, e.alpha, e.label) for e in cut] == [(e.id, e.alpha, e.label) for e in whole]
    for short, full in zip(cut, whole):
        text, target = short.completion[0]["content"], full.completion[0]["content"]
        if short.label == "reject":
            assert text == target  # the reject phrase whole
        else:
            assert target.startswith(text) and len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 2
    assert json.loads((gate.sft_dir / "stats.json").read_text())["answer_tokens"] == 2
    # The tokenizer's own pieces, whatever the model guessed: a worked answer keeps its opening.
    working = "7 + 5 = 12, so it is 12.\nThe answer is: 12"
    opening = token_cut(tokenizer, 2)(working)
    assert working.startswith(opening) and 0 < len(opening) < len(working)


def test_report_serves_the_adapter_through_vllm(run: Run):
    report = run.report()
    assert report["questions"] == 8
    assert [row["alpha"] for row in report["trained"]] == [0.2, 0.35, 0.5, 0.65, 0.8]
    for row in report["trained"]:
        assert 0.0 <= row["answer_rate"] <= 1.0
        # The reject's first-token probability, read from vLLM's log-probs of the same prompt.
        assert 0.0 <= row["reject_mass_median"] <= 1.0 and 0.0 <= row["answer_rate_mass"] <= 1.0
    assert "AUC for own correctness" in report["table"]
    assert 0.0 <= report["forced_accuracy"]["before"] <= 1.0 and 0.0 <= report["forced_accuracy"]["after"] <= 1.0
    assert report["untrained_confidence_rule"] is not None  # the base engine reported confidences
    # The trained rows are scored against the trained model's own competence, sampled through
    # the served adapter on the held-out questions and cached under the adapter's weights.
    assert report["competence"]["trained_sampled"] is True
    own = read_competence(competence_cache(run.report_dir, run.final_adapter()))
    held_out = [r for r in own.values() if r.split == "test"]
    assert len(held_out) == 8 and all(len(r.samples) == 4 for r in own.values())
    assert report["competence"]["after"] == round(sum(r.p for r in held_out) / 8, 4)
    # The MiniLM probe routes for the trained model: fitted on its own competence on the
    # validation questions (sampled into the same cache), never on the training mix it saw.
    fitted = [r for r in own.values() if r.split == "train"]
    mix = {r.id for r in read_competence(run.cfg.out_dir / "competence.jsonl").values() if r.split == "train"}
    assert fitted and not {r.id for r in fitted} & mix
    assert report["probe_questions"] == {"trained": len(fitted), "base": len(mix)}
    assert report["minilm_probe_rule"] is not None and report["minilm_probe_base_rule"] is not None
    # Thresholds on the reject's probability, fitted on the same validation questions.
    assert all(row["reject_at_fitted"] in run.cfg.calibrate.grid for row in report["trained"])
    assert "fitted per α on the validation questions" in report["table"]
    for name in ("report.json", "report.md", "answer_rate.png"):
        assert (run.report_dir / name).stat().st_size > 0


def test_export_writes_the_adapter_and_its_card(run: Run):
    dest = run.export()
    card = json.loads((dest / "card.json").read_text())
    assert (dest / "adapter_model.safetensors").read_bytes() == (run.rl_dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert card["command"] == "disrouter train all tiny.yaml" and card["config"]["agent"] == "tiny"
    cost = card["training_cost"]
    assert {s["stage"] for s in cost["stages"]} == {"sample", "sft", "rl"}
    assert cost["wall_s"] > 0 and cost["tokens_sampled"] > 0 and cost["tokens_trained"] > 0
    assert card["metrics"]["forced_accuracy"] and "Training cost" in (dest / "README.md").read_text()


def test_the_exported_adapter_serves_like_peft_in_the_engine(run: Run, tmp_path):
    """vLLM's LoRA path and the merged path give the greedy reply PEFT gives in transformers."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from disrouter.actors.engine import EngineRequest, build_engine
    from disrouter.actors.engines.prompting import as_dicts, build_messages

    exported = Path(run.cfg.export_to)
    adapter = tmp_path / "adapter"
    shutil.copytree(exported, adapter)
    request = EngineRequest(query_id="q", prompt="What is 2 + 3?", alpha=0.5, stop_on_answer=False, max_tokens=8)

    tokenizer = AutoTokenizer.from_pretrained(run.cfg.model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run.cfg.model, dtype=torch.float32), str(adapter))
    ids = tokenizer.apply_chat_template(as_dicts(build_messages(request)), add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)

    async def served(merge: bool) -> str:
        engine = build_engine(
            {"type": "vllm", "model": run.cfg.model, "max_tokens": 8, **run.cfg.engine,
             "lora": {"name": "tiny-selfaware", "path": str(adapter), "merge": merge}},
            agent="tiny",
        )
        await engine.start()
        try:
            return (await engine.generate(request)).text
        finally:
            await engine.close()

    assert asyncio.run(served(False)) == expected
    assert asyncio.run(served(True)) == expected
