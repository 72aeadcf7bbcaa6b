"""A tiny causal LM built from nothing, for driving the training pipeline end to end on a CPU.

A byte-level BPE tokenizer trained (with `tokenizers`) on generated arithmetic text in the
prompt layout the runtime sends, ChatML special tokens and chat template, and a randomly
initialised two-layer Qwen2 model. No download, under a second to build; vLLM and TRL load it
like any Hugging Face folder. It knows nothing, which is the point: the tests check that each
stage runs and changes what it should, not that the model learns arithmetic.
"""

from __future__ import annotations

import json
from pathlib import Path

from disrouter.actors.models import CHATML_TEMPLATE
from disrouter.training.arith import generate
from disrouter.training.labels import forced_messages, self_aware_messages

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def corpus() -> list[str]:
    texts = []
    for q in generate(300, seed=11):
        for messages in (forced_messages(q.prompt), self_aware_messages(q.prompt, 0.5)):
            texts.append("".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages))
        texts.append(f"{q.prompt} The answer is: {q.gold}\nI don't know!")
    return texts


def build(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(
        corpus(),
        trainers.BpeTrainer(vocab_size=512, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token=None, unk_token=None
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None, torch_dtype="float32",
    )
    Qwen2ForCausalLM(config).save_pretrained(str(folder), safe_serialization=True)
    # A generation config whose eos is the ChatML end of turn, as the real models have.
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.eos_token_id}))
    return folder
