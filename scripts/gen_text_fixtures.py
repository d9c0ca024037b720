#!/usr/bin/env python3
"""Generate tokenizer and chat-template golden files with the Hugging Face reference
implementations (the `tokenizers` library and transformers' `render_jinja_template`).

Usage: python3 scripts/gen_text_fixtures.py models/SmolLM2-135M-Instruct.Q4_1.gguf
Needs: pip install gguf transformers tokenizers jinja2 (no torch).

The tokenizer is built from the GGUF vocabulary and merges with transformers' own GGUF
converter (`byte_level_tokenizer` + `add_gguf_special_tokens`). transformers 5.24 has no entry
for `tokenizer.ggml.pre = smollm`, so its GGUF path would fall back to plain GPT-2 splitting;
SmolLM2's published tokenizer.json (HuggingFaceTB/SmolLM2-135M-Instruct) uses
`Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False, use_regex=True)]`,
and llama.cpp's `smollm` pre-tokenizer splits `\\p{N}` first for the same reason, so we set that
pre-tokenizer here. Output files are committed; tests need no Python.
"""
import json
import sys
from pathlib import Path

import gguf
from tokenizers import pre_tokenizers
from transformers.integrations.gguf.gguf_tokenizer_mapping import add_gguf_special_tokens, byte_level_tokenizer
from transformers.utils.chat_template_utils import render_jinja_template

OUT = Path(__file__).resolve().parent.parent / "server/text/tests/fixtures"

TEXTS = [
    "Hello, world!",
    "The year 2026 has 365 days; π ≈ 3.14159.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\n\n\nand\r\nCRLF",
    "Emoji: 😀👍🏽 🇫🇷 and CJK: 你好，世界。日本語のテキスト",
    "def add(a, b):\n    return a + b  # sum\n",
    "Ünïcödé àccents, ß, Ωmega, кириллица, العربية",
    "multiple     spaces      here",
    "<|im_start|>user\nspecial tokens inside text<|im_end|>",
    "<|endoftext|>after eos",
    "numbers 1234567890 and 0.5e-10 and 1,000,000",
    "I'm sure they'll say it's 'quoted' and \"double-quoted\".",
    "https://example.com/path?query=1&x=y#frag",
    "",
    " ",
    "a",
    "\u00a0non-breaking\u2003em-space",
]

CONVERSATIONS = [
    [{"role": "user", "content": "Hi there!"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 2+2?"}],
    [
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
        {"role": "user", "content": "Why?"},
    ],
    [{"role": "user", "content": "  spaces and\nnewlines  "}],
]

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def main(path):
    reader = gguf.GGUFReader(path)
    tokens = field(reader, "tokenizer.ggml.tokens")
    merges = field(reader, "tokenizer.ggml.merges")
    token_type = field(reader, "tokenizer.ggml.token_type")
    td = {"tokens": tokens, "merges": merges, "token_type": token_type, "tokenizer_type": "gpt2"}
    hf = add_gguf_special_tokens(byte_level_tokenizer(td), td)
    assert field(reader, "tokenizer.ggml.pre") == "smollm"
    hf.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)]
    )
    cases = []
    for t in TEXTS:
        ids = hf.backend_tokenizer.encode(t, add_special_tokens=False).ids
        cases.append({
            "text": t,
            "ids": ids,
            "decoded": hf.backend_tokenizer.decode(ids, skip_special_tokens=False),
            "decoded_skip_special": hf.backend_tokenizer.decode(ids, skip_special_tokens=True),
        })
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "smollm2_tokenizer.json").write_text(json.dumps(cases, ensure_ascii=False, indent=1) + "\n")

    templates = {
        "smollm2": field(reader, "tokenizer.chat_template"),
        "llama3": LLAMA3_TEMPLATE,
        "mistral": MISTRAL_TEMPLATE,
    }
    specials = {"smollm2": ("<|im_start|>", "<|im_end|>"), "llama3": ("<|begin_of_text|>", "<|eot_id|>"), "mistral": ("<s>", "</s>")}
    out = []
    for name, tmpl in templates.items():
        bos, eos = specials[name]
        for conv in CONVERSATIONS:
            for agp in (False, True):
                case = {"template": name, "messages": conv, "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos}
                try:
                    rendered = render_jinja_template(conversations=[conv], chat_template=tmpl, add_generation_prompt=agp,
                                                     bos_token=bos, eos_token=eos)[0][0]
                    case["rendered"] = rendered
                except Exception as e:  # template raised (e.g. roles must alternate)
                    case["error"] = str(e)
                out.append(case)
    (OUT / "chat_templates.json").write_text(json.dumps({"templates": templates, "cases": out}, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(cases)} tokenizer cases and {len(out)} template cases to {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "models/SmolLM2-135M-Instruct.Q4_1.gguf")
