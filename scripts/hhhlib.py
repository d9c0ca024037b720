"""Helpers shared by the evaluation and benchmark scripts (scripts/, loadtests/): JSON POSTs,
metric reads, starting a release server and waiting until it is ready, and the hh-rlhf
transcript parser, which follows the Rust one (proto/src/hh_rlhf.rs) rule for rule; both are
checked against proto/tests/fixtures/hh_rlhf_cases.json (tests/hh_rlhf_parity_test.py and
proto's unit tests). Standard library only."""

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/hhh-server")
MODEL = os.path.join(ROOT, "models/SmolLM2-135M-Instruct.Q4_1.gguf")
HH_HARMLESS_TEST = os.path.join(ROOT, "../shared/data/hh-rlhf/harmless-base-test.jsonl")

_H, _A, _A_BARE = "\n\nHuman: ", "\n\nAssistant: ", "\n\nAssistant:"


def post(base, path, body, timeout=900):
    """POST JSON, return the decoded JSON answer (raises on an HTTP error)."""
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def get(base, path, timeout=60):
    """GET a JSON route, return the decoded answer."""
    with urllib.request.urlopen(base + path, timeout=timeout) as r:
        return json.loads(r.read())


def metric(base, name):
    """The sum over all label sets of one metric in the server's /metrics."""
    text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith(name + " ") or l.startswith(name + "{"))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_ready(base, tries=600):
    """Poll /health/ready every 0.2 s; True once it answers 200."""
    for _ in range(tries):
        try:
            if urllib.request.urlopen(base + "/health/ready", timeout=2).status == 200:
                return True
        except Exception:
            time.sleep(0.2)
    return False


@contextlib.contextmanager
def server(port, args, base_url=None):
    """Yield the base URL of a server: `base_url` when given, else a release `hhh-server serve
    --port <port> <args...>` started here and terminated afterwards."""
    if base_url:
        yield base_url
        return
    p = subprocess.Popen([BIN, "serve", "--port", str(port)] + list(args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        if not wait_ready(base):
            raise SystemExit("server did not become ready")
        yield base
    finally:
        p.terminate()
        p.wait()


def parse_transcript(t):
    """hh-rlhf transcript -> [{"role", "content"}]; None unless it alternates (user first) and
    ends with the assistant. A bare "\\n\\nAssistant:" (no space) opens an assistant turn too."""
    turns, rest = [], t
    while True:
        for mark, role in ((_H, "user"), (_A, "assistant"), (_A_BARE, "assistant")):
            if rest.startswith(mark):
                body = rest[len(mark):]
                break
        else:
            return None
        nxt = [i for i in (body.find(_H), body.find(_A), body.find(_A_BARE)) if i >= 0]
        cut = min(nxt) if nxt else len(body)
        turns.append({"role": role, "content": body[:cut].strip()})
        rest = body[cut:]
        if not rest:
            break
    alternates = all(m["role"] == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(turns))
    return turns if alternates and turns[-1]["role"] == "assistant" else None


def hh_pairs(path=HH_HARMLESS_TEST, max_chars=None):
    """(conversation, chosen, rejected) of every hh-rlhf row whose two transcripts parse, share
    the conversation, end in different non-empty responses and (optionally) fit in max_chars."""
    for line in open(path):
        r = json.loads(line)
        if max_chars is not None and (len(r["chosen"]) > max_chars or len(r["rejected"]) > max_chars):
            continue
        c, j = parse_transcript(r["chosen"]), parse_transcript(r["rejected"])
        if c and j and c[:-1] == j[:-1] and c[-1] != j[-1] and c[-1]["content"] and j[-1]["content"]:
            yield c[:-1], c[-1]["content"], j[-1]["content"]
