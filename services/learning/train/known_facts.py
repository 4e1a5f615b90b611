#!/usr/bin/env python3
"""Keeps the plain facts the base model already knows.

Fine-tuning a small model on facts it does not know teaches it to answer
confidently whatever it is asked (the adapter before this filter answered
"Which animal barks?" with "The cat.", having learnt "What animal quacks? A
duck."); fine-tuning on facts it does know teaches it to say what it knows in
the reply format. So each candidate question is put to the *base* model, few-shot
in the plain `Question:/Answer:` pattern a base model follows, greedy, and
only those whose answer passes the candidate's own check are kept. This is
rejection sampling with a checker, on the base model, for the `plain`
capability.

    known_facts.py --model BASE.gguf --pool pool.jsonl --out facts.jsonl

Input lines: {"q": question, "a": the answer to train on, "check": regex}.
Output lines: the same, plus "base": what the base model said; only kept facts
are written (with --all, every fact, with "known": true/false).
Bad input exits with status 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

# Shots that are not in any pool: the pattern, not the knowledge.
SHOTS = (
    "Question: What colour is a ripe banana?\nAnswer: Yellow.\n\n"
    "Question: How many wheels does a tricycle have?\nAnswer: 3.\n\n"
    "Question: Hi!\nAnswer: Hello! How can I help?\n\n"
)


def fail(msg: str) -> None:
    print(f"known_facts: {msg}", file=sys.stderr)
    sys.exit(2)


def read_pool(path: Path) -> list[dict]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        fail(f"{path}: {e}")
    facts = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            f = json.loads(line)
            q, a, check = f["q"], f["a"], f["check"]
            rx = re.compile(check)
        except (ValueError, KeyError, TypeError, re.error) as e:
            fail(f"{path}:{i}: {e}")
        if not rx.search(a):
            fail(f"{path}:{i}: the check {check!r} does not pass its own answer {a!r}")
        facts.append(f)
    if not facts:
        fail(f"{path}: no facts")
    return facts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="the base model's GGUF")
    ap.add_argument("--pool", required=True, type=Path, action="append", help="candidate facts (JSONL); repeatable")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--all", action="store_true", help="write every fact with known: true/false")
    args = ap.parse_args()

    facts = [f for p in args.pool for f in read_pool(p)]
    seen: set[str] = set()
    unique = []
    for f in facts:
        key = re.sub(r"[^a-z0-9 ]", "", f["q"].lower()).strip()
        if key not in seen:
            seen.add(key)
            unique.append(f)
    if not args.model.is_file():
        fail(f"{args.model}: no such file")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    d, name = str(args.model.parent), args.model.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    model.eval()
    print(f"loaded the base model in {time.time() - t0:.0f} s", file=sys.stderr)

    kept = 0
    out = []
    with torch.no_grad():
        for i, f in enumerate(unique, 1):
            ids = tok(SHOTS + f"Question: {f['q']}\nAnswer:", return_tensors="pt")
            gen = model.generate(**ids, max_new_tokens=12, do_sample=False)
            said = tok.decode(gen[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
            said = said.strip().split("\n")[0].strip()
            known = re.search(f["check"], said) is not None
            kept += known
            if known or args.all:
                out.append({**f, "base": said, **({"known": known} if args.all else {})})
            if sys.stderr.isatty():
                print(f"\r{i}/{len(unique)} checked, {kept} known", end="", file=sys.stderr)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    tmp = args.out.with_suffix(args.out.suffix + ".part")
    tmp.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out), encoding="utf-8")
    tmp.replace(args.out)
    print(f"{kept} of {len(unique)} facts known by the base model; written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
