"""The Python hh-rlhf parser (scripts/hhhlib.py) against the fixture the Rust parser is tested
on (proto/tests/fixtures/hh_rlhf_cases.json): one rule set for training and evaluation."""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from hhhlib import parse_transcript  # noqa: E402


def main():
    cases = json.load(open(os.path.join(ROOT, "proto/tests/fixtures/hh_rlhf_cases.json")))
    bad = []
    for c in cases:
        got = parse_transcript(c["transcript"])
        got = None if got is None else [[t["role"], t["content"]] for t in got]
        if got != c["turns"]:
            bad.append(f'{c["name"]}: got {got!r}, want {c["turns"]!r}')
    if bad:
        sys.exit("hh-rlhf parser disagrees with the fixture:\n" + "\n".join(bad))
    print(f"hh-rlhf parity: {len(cases)} cases agree")


if __name__ == "__main__":
    main()
