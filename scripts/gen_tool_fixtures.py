#!/usr/bin/env python3
"""Tool-calling chat-template goldens, rendered by the reference implementation (transformers'
`render_jinja_template`, what `apply_chat_template(..., tools=...)` calls).

The templates are the models' own, as llama.cpp keeps them in `models/templates/` (fetched from
each model's Hugging Face repository by llama.cpp's `scripts/get_chat_template.py`), taken from
the llama-cpp-python sdist on PyPI (no model hub is reachable here): Qwen2.5-7B-Instruct
(Hermes-style `<tool_call>`), Llama-3.1-8B-Instruct (JSON `{"name", "parameters"}`) and
Mistral-Nemo-Instruct-2407 (`[TOOL_CALLS]`). They are the models' chat templates, distributed
under the models' licences (Apache-2.0 for Qwen2.5 and Mistral Nemo, the Llama 3.1 Community
Licence for Llama 3.1); they are test data here, not part of the product.

Usage: python3 scripts/gen_tool_fixtures.py   (needs: pip install transformers jinja2; no torch)
Writes server/text/tests/fixtures/tool_templates/*.jinja and tool_goldens.json (committed; the
tests need no Python and no network).
"""
import hashlib
import io
import json
import tarfile
import urllib.request
from pathlib import Path

from transformers.utils.chat_template_utils import render_jinja_template

SDIST = "https://files.pythonhosted.org/packages/ec/e9/e7de2b0463ea3ffbf0ede6cb21b58c1258a8f6521aae45ca773a59fe7cf3/llama_cpp_python-0.3.36.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
TEMPLATES = {
    "qwen2.5": ("Qwen-Qwen2.5-7B-Instruct.jinja", None, "<|im_end|>"),
    "llama3.1": ("meta-llama-Llama-3.1-8B-Instruct.jinja", "<|begin_of_text|>", "<|eot_id|>"),
    "mistral-nemo": ("mistralai-Mistral-Nemo-Instruct-2407.jinja", "<s>", "</s>"),
}
OUT = Path(__file__).resolve().parent.parent / "server/text/tests/fixtures"

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city (°C) — <b>bold</b> & 'quoted'",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "description": "Search the web",
        "parameters": {"type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "integer", "minimum": 1, "maximum": 10}, "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["query"]},
    },
}


def call(cid, name, args):
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}


CASES = [
    # (templates, messages, tools, add_generation_prompt)
    (["qwen2.5", "llama3.1", "mistral-nemo"], [{"role": "user", "content": "What's the weather in Paris?"}], [WEATHER, SEARCH], True),
    (["qwen2.5", "llama3.1", "mistral-nemo"], [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Oslo?"}], [WEATHER], True),
    (
        ["qwen2.5", "llama3.1", "mistral-nemo"],
        [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [call("abc123XYZ", "get_weather", {"city": "Paris", "unit": "celsius"})]},
            {"role": "tool", "tool_call_id": "abc123XYZ", "content": "{\"temp\": 21, \"sky\": \"clear\"}"},
        ],
        [WEATHER],
        True,
    ),
    (
        ["qwen2.5", "mistral-nemo", "llama3.1"],  # Llama 3.1's template refuses two calls in one turn
        [
            {"role": "user", "content": "Weather in Rome and news about it?"},
            {"role": "assistant", "content": "", "tool_calls": [call("call00001", "get_weather", {"city": "Rome"}), call("call00002", "search", {"query": "Rome news", "limit": 3, "tags": ["it", "news"]})]},
            {"role": "tool", "tool_call_id": "call00001", "content": "18 C"},
            {"role": "tool", "tool_call_id": "call00002", "content": "No news."},
            {"role": "assistant", "content": "It is 18 C in Rome; no news."},
            {"role": "user", "content": "Thanks ✓"},
        ],
        [WEATHER, SEARCH],
        True,
    ),
    (["qwen2.5", "llama3.1", "mistral-nemo"], [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}], None, True),
    (["qwen2.5"], [{"role": "user", "content": "Hi!"}, {"role": "assistant", "content": "Let me check.", "tool_calls": [call("c1", "search", {"query": "hi"})]}], [SEARCH], False),
]


def main():
    data = urllib.request.urlopen(SDIST).read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != SDIST_SHA256:
        raise SystemExit(f"llama-cpp-python sdist sha256 {digest}, expected {SDIST_SHA256}")
    tar = tarfile.open(fileobj=io.BytesIO(data))
    tdir = OUT / "tool_templates"
    tdir.mkdir(parents=True, exist_ok=True)
    sources = {}
    for key, (fname, _, _) in TEMPLATES.items():
        member = next(m for m in tar.getmembers() if m.name.endswith("vendor/llama.cpp/models/templates/" + fname))
        src = tar.extractfile(member).read().decode()
        (tdir / f"{key}.jinja").write_text(src)
        sources[key] = src
    cases = []
    for names, messages, tools, agp in CASES:
        for name in names:
            _, bos, eos = TEMPLATES[name]
            case = {"template": name, "messages": messages, "tools": tools, "add_generation_prompt": agp, "bos_token": bos, "eos_token": eos}
            try:
                case["rendered"] = render_jinja_template([messages], tools=tools, chat_template=sources[name], add_generation_prompt=agp, bos_token=bos or "", eos_token=eos or "")[0][0]
            except Exception as e:  # a template's own raise_exception
                case["error"] = str(e)
            cases.append(case)
    (OUT / "tool_goldens.json").write_text(json.dumps({"source": SDIST, "cases": cases}, ensure_ascii=False, indent=1) + "\n")
    print(f"wrote {len(cases)} cases")


if __name__ == "__main__":
    main()
