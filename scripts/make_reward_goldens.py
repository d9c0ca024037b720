#!/usr/bin/env python3
"""Golden rewards from Hugging Face transformers (issue 24, item 4).

Writes two tiny random reward models under server/bin/tests/fixtures/hf_reward/ and the rewards
that the reference implementations give for a fixed set of inputs:

- seqcls/: a `LlamaForSequenceClassification` (num_labels 1) saved with `save_pretrained`;
  references from its own forward (batch of one, no padding).
- openrlhf/: an OpenRLHF reward checkpoint as `get_llm_for_sequence_regression(..., "reward")`
  saves it: the base `LlamaModel` weights under `model.`, `value_head.weight` [1, hidden] without a
  bias, and `normalize_reward`, `mean`, `std` in config.json. OpenRLHF itself does not install
  without a GPU (deepspeed, flash-attn), so its `RewardModel.forward` is re-implemented here from
  openrlhf/models/model.py: `value_head(last_hidden_state)` at the last non-pad token, then
  `(reward - mean) / std` when normalize_reward is set.

Both share a word-level tokenizer.json (the one the Rust tests write, plus `<s>`, `</s>` as
special added tokens) loaded here with `transformers.PreTrainedTokenizerFast`. `/get_reward`
inputs are prepared as OpenRLHF's serve_rm.py does: strip pad/EOS at both ends, append EOS,
tokenize without special tokens, truncate to max_len (right side).

Usage: python3 -m pip install torch transformers safetensors && python3 scripts/make_reward_goldens.py
"""

import json
import os
import sys

import torch
from transformers import LlamaConfig, LlamaForSequenceClassification, LlamaModel, PreTrainedTokenizerFast
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "server", "bin", "tests", "fixtures", "hf_reward")
VOCAB = 128
FIXED = ["[UNK]", "<s>", "</s>", "user", "assistant", ":", "hello", "world"]
MAX_LEN = 12  # the /get_reward truncation length the test serves with (--reward-max-len)


def write_tokenizer(d):
    vocab = {w: i for i, w in enumerate(FIXED)}
    vocab.update({f"w{i}": i for i in range(len(FIXED), VOCAB)})
    added = [
        {"id": i, "content": w, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
        for i, w in enumerate(FIXED[:3])
    ]
    tok = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"},
    }
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        json.dump(tok, f)
    cfg = {"bos_token": "<s>", "eos_token": "</s>", "chat_template": "{% for m in messages %}{{ m.role }} : {{ m.content }} {% endfor %}"}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f)


def config():
    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=1024,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2, pad_token_id=None, num_labels=1,
    )


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.1 * (torch.rand(p.shape, generator=g) * 2 - 1))
            elif "embed" in name:
                p.copy_(torch.rand(p.shape, generator=g) * 2 - 1)
            else:
                p.copy_(0.25 * (torch.rand(p.shape, generator=g) * 2 - 1))


def openrlhf_query(text, eos):
    """serve_rm.py: strip_sequence(text, pad, eos) + eos, with pad = eos (get_tokenizer's default)."""
    while text.endswith(eos):
        text = text[: -len(eos)]
    while text.startswith(eos):
        text = text[len(eos):]
    return text + eos


TEXTS = ["hello world", "user : hello w9 assistant : world w12", "w20 w21 hello", "w30 w31 w32 w33 w34 w35 w36 w37 w38 w39 w40 w41 w42 w43 w44"]
GET_REWARD = [
    "user : hello w9 assistant : world w12",
    "user : hello w9 assistant : world w12</s>",
    "</s>user : hello w9 assistant : world w12</s></s>",
    "w30 w31 w32 w33 w34 w35 w36 w37 w38 w39 w40 w41 w42 w43 w44",  # over MAX_LEN: right-truncated
]


def main():
    torch.manual_seed(0)
    tok = None
    out = {"max_len": MAX_LEN, "transformers": __import__("transformers").__version__, "torch": torch.__version__, "models": {}}

    # 1. LlamaForSequenceClassification.
    d = os.path.join(ROOT, "seqcls")
    os.makedirs(d, exist_ok=True)
    m = LlamaForSequenceClassification(config()).eval()
    randomize(m, 1)
    m.save_pretrained(d, safe_serialization=True)
    write_tokenizer(d)
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"), bos_token="<s>", eos_token="</s>", unk_token="[UNK]")

    def seqcls_reward(ids):
        with torch.no_grad():
            return m(torch.tensor([ids])).logits[0, 0].item()

    # 2. OpenRLHF reward checkpoint.
    d2 = os.path.join(ROOT, "openrlhf")
    os.makedirs(d2, exist_ok=True)
    base = LlamaModel(config()).eval()
    randomize(base, 2)
    g = torch.Generator().manual_seed(3)
    value_head = torch.randn(1, 64, generator=g) / (64 + 1) ** 0.5 * 4
    mean, std = 0.37, 1.9
    state = {f"model.{k}": v.contiguous() for k, v in base.state_dict().items()}
    state["value_head.weight"] = value_head
    save_file(state, os.path.join(d2, "model.safetensors"), metadata={"format": "pt"})
    cfg = config().to_dict()
    cfg.update({"architectures": ["LlamaForCausalLM"], "normalize_reward": True, "mean": mean, "std": std})
    for k in ("num_labels", "id2label", "label2id"):
        cfg.pop(k, None)
    with open(os.path.join(d2, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    write_tokenizer(d2)

    def openrlhf_reward(ids):
        with torch.no_grad():
            mask = torch.ones(1, len(ids), dtype=torch.long)
            pos = mask.cumsum(-1) - 1
            h = base(torch.tensor([ids]), attention_mask=mask, position_ids=pos).last_hidden_state
            values = (h @ value_head.T).squeeze(-1)
            eos_index = mask.size(1) - 1 - mask.fliplr().argmax(dim=1, keepdim=True)
            r = values.gather(dim=1, index=eos_index).squeeze(1)
            return ((r - mean) / std).item()

    for name, fn in (("seqcls", seqcls_reward), ("openrlhf", openrlhf_reward)):
        texts = []
        for t in TEXTS:
            ids = tok(t, add_special_tokens=True)["input_ids"]
            texts.append({"text": t, "ids": ids, "reward": fn(ids)})
        get_reward = []
        for q in GET_REWARD:
            prepared = openrlhf_query(q, tok.eos_token)
            ids = tok(prepared, add_special_tokens=False, truncation=True, max_length=MAX_LEN)["input_ids"]
            get_reward.append({"query": q, "ids": ids, "reward": fn(ids)})
        out["models"][name] = {"texts": texts, "get_reward": get_reward}

    with open(os.path.join(ROOT, "goldens.json"), "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1)[:1500])


if __name__ == "__main__":
    sys.exit(main())
