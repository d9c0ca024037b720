#!/usr/bin/env python3
"""lm-evaluation-harness, unmodified, against a real hhh-server (release build, default model):

- `local-completions` with `tokenizer_backend=remote` (reads `GET /tokenizer_info`, `/tokenize`,
  `/detokenize`): a multiple-choice task (loglikelihood) and a generate_until task, from a task
  YAML over `tests/fixtures/lm_eval_smoke.jsonl` (no hub access);
- `local-chat-completions` with the chat template: the generate_until task.

Every loglikelihood lm-eval logged is recomputed directly: the text context + continuation
through `/v1/completions` with `echo` and `logprobs`, summing the logprobs of the tokens that
start at or after the continuation's first character (the server's own tokenization of the whole
text, not lm-eval's). Exits non-zero on any failure.
"""
import json
import os
import sys
import tempfile

import lm_eval
from lm_eval.tasks import TaskManager

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import hhhlib  # noqa: E402

MODEL = "smollm2-135m-instruct"
DATA = os.path.join(ROOT, "tests/fixtures/lm_eval_smoke.jsonl")

TASKS = """
task: hhh_smoke_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""
GEN_TASK = """
task: hhh_smoke_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[answer]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
metric_list:
  - metric: exact_match
"""


def direct_loglikelihood(base, context, continuation):
    """Sum of the logprobs of the tokens of `continuation` after `context`, from echo."""
    r = hhhlib.post(base, "/v1/completions", {"model": MODEL, "prompt": context + continuation, "max_tokens": 1, "temperature": 0, "echo": True, "logprobs": 1})
    lp = r["choices"][0]["logprobs"]
    n = len(lp["token_logprobs"]) - 1  # the last one is the generated token
    total = 0.0
    for off, x in zip(lp["text_offset"][:n], lp["token_logprobs"][:n]):
        if off >= len(context):
            total += x
    return total


def main():
    info_needed = {"eos_token", "bos_token", "chat_template"}
    with hhhlib.server(hhhlib.free_port(), ["--num-kv-blocks", "512"]) as base:
        info = hhhlib.get(base, "/tokenizer_info")
        assert info_needed <= set(info) and info["eos_token"] == "<|im_end|>" and info["chat_template"], info
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "hhh_smoke_mc.yaml"), "w") as f:
                f.write(TASKS.format(data=DATA))
            with open(os.path.join(tmp, "hhh_smoke_gen.yaml"), "w") as f:
                f.write(GEN_TASK.format(data=DATA))
            tm = TaskManager(include_path=tmp)
            args = f"model={MODEL},base_url={base}/v1/completions,tokenizer_backend=remote,num_concurrent=1,max_retries=1"
            out = lm_eval.simple_evaluate(model="local-completions", model_args=args, tasks=["hhh_smoke_mc", "hhh_smoke_gen"], task_manager=tm, log_samples=True)
            mc = out["results"]["hhh_smoke_mc"]
            gen = out["results"]["hhh_smoke_gen"]
            print("local-completions:", json.dumps({"acc": mc["acc,none"], "exact_match": gen["exact_match,none"]}))
            samples = out["samples"]["hhh_smoke_mc"]
            assert len(samples) == 12, len(samples)
            worst = 0.0
            for s in samples:
                for (context, continuation), resp in zip(s["arguments"], s["resps"]):
                    ll = resp[0][0]
                    d = direct_loglikelihood(base, context, continuation)
                    worst = max(worst, abs(ll - d))
                    assert abs(ll - d) < 2e-3, (context, continuation, ll, d)
            print(f"loglikelihoods: {sum(len(s['arguments']) for s in samples)} equal the direct echo computation (max |diff| {worst:.2e})")
            gens = [s["resps"][0][0] for s in out["samples"]["hhh_smoke_gen"]]
            assert len(gens) == 12 and all(isinstance(g, str) and "\n" not in g for g in gens), gens

            chat_args = f"model={MODEL},base_url={base}/v1/chat/completions,num_concurrent=1,max_retries=1"
            out = lm_eval.simple_evaluate(model="local-chat-completions", model_args=chat_args, tasks=["hhh_smoke_gen"], task_manager=tm, apply_chat_template=True, log_samples=True)
            gens = [s["resps"][0][0] for s in out["samples"]["hhh_smoke_gen"]]
            assert len(gens) == 12 and all(isinstance(g, str) for g in gens), gens
            print("local-chat-completions:", json.dumps({"exact_match": out["results"]["hhh_smoke_gen"]["exact_match,none"]}))
        print("lm-eval test: ok")


if __name__ == "__main__":
    main()
