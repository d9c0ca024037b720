#!/usr/bin/env python3
"""Golden rewards from Hugging Face transformers (issue 24, item 4).

The two tiny random reward models are written by our own code (`hhh_model::testing::RewardFixture`,
through `cargo run -p hhh-model --example reward_fixtures`), so no weights are committed: the
tests write the same files. This script loads them with transformers and records the rewards of
the reference implementations in server/bin/tests/fixtures/hf_reward/goldens.json:

- seqcls: a `LlamaForSequenceClassification` (num_labels 1), loaded with `from_pretrained`;
  reference = its own forward (batch of one, no padding).
- openrlhf: an OpenRLHF reward checkpoint as `get_llm_for_sequence_regression(..., "reward")`
  saves it: the base `LlamaModel` weights under `model.`, `value_head.weight` [1, hidden] without
  a bias, and `normalize_reward`, `mean`, `std` in config.json. OpenRLHF itself does not install
  without a GPU (deepspeed, flash-attn), so its `RewardModel.forward` is re-implemented here from
  openrlhf/models/model.py: `value_head(last_hidden_state)` at the last non-pad token, then
  `(reward - mean) / std` when normalize_reward is set.

Both share the word-level tokenizer committed beside goldens.json (the one the Rust tests write,
plus `<s>`, `</s>` as special added tokens), loaded with `transformers.PreTrainedTokenizerFast`.
`/get_reward` inputs are prepared as OpenRLHF's serve_rm.py does: strip pad/EOS at both ends,
append EOS, tokenize without special tokens, truncate to max_len (right side).

Usage: python3 -m pip install torch transformers safetensors && python3 scripts/make_reward_goldens.py
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file
from transformers import LlamaForSequenceClassification, LlamaModel, PreTrainedTokenizerFast

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "server", "bin", "tests", "fixtures", "hf_reward")
MAX_LEN = 12  # the /get_reward truncation length the test serves with (--reward-max-len)


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
    tmp = tempfile.mkdtemp(prefix="hhh-reward-fixtures-")
    subprocess.run(["cargo", "run", "-q", "-p", "hhh-model", "--example", "reward_fixtures", "--", tmp], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    for name in ("seqcls", "openrlhf"):
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(os.path.join(FIX, name, f), os.path.join(tmp, name, f))
        # transformers finds a sharded checkpoint through its index file.
        d = os.path.join(tmp, name)
        weight_map = {k: f for f in sorted(os.listdir(d)) if f.endswith(".safetensors") for k in load_file(os.path.join(d, f))}
        json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(d, "model.safetensors.index.json"), "w"))
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(FIX, "seqcls", "tokenizer.json"), bos_token="<s>", eos_token="</s>", unk_token="[UNK]")
    out = {"max_len": MAX_LEN, "transformers": __import__("transformers").__version__, "torch": torch.__version__, "models": {}}

    seq = LlamaForSequenceClassification.from_pretrained(os.path.join(tmp, "seqcls"), num_labels=1, torch_dtype=torch.float32).eval()

    def seqcls_reward(ids):
        with torch.no_grad():
            return seq(torch.tensor([ids])).logits[0, 0].item()

    d2 = os.path.join(tmp, "openrlhf")
    cfg = json.load(open(os.path.join(d2, "config.json")))
    base = LlamaModel.from_pretrained(d2, torch_dtype=torch.float32).eval()
    state = {}
    for f in sorted(os.listdir(d2)):
        if f.endswith(".safetensors"):
            state.update(load_file(os.path.join(d2, f)))
    value_head = state["value_head.weight"]
    mean, std = cfg["mean"], cfg["std"]
    assert cfg["normalize_reward"] is True

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

    with open(os.path.join(FIX, "goldens.json"), "w") as f:
        json.dump(out, f, indent=1)
    shutil.rmtree(tmp)
    print(json.dumps({k: [x["reward"] for x in v["texts"]] for k, v in out["models"].items()}))


if __name__ == "__main__":
    sys.exit(main())
