"""The official `openai` Python SDK against the gateway's OpenAI-compatible face.

    python openai_client.py URL TOKEN

Prints one JSON object (the last line) with what each step saw; the Rust test
(tests/tests/a2a.rs) asserts on it.
"""

import json
import sys
import time

import openai
from openai import OpenAI

url, token = sys.argv[1], sys.argv[2]
base = url.rstrip("/") + "/v1"
client = OpenAI(base_url=base, api_key=token, max_retries=0, timeout=120)
out = {}
ASK = [{"role": "user", "content": "What is 17*23+4?"}]

try:
    out["models"] = [m.id for m in client.models.list()]

    r = client.chat.completions.create(model="hearth", messages=ASK)
    usage = r.usage.model_dump() if r.usage else {}
    out["plain"] = {
        "object": r.object,
        "content": r.choices[0].message.content,
        "role": r.choices[0].message.role,
        "finish": r.choices[0].finish_reason,
        "prompt_tokens": usage.get("prompt_tokens"),
        "hearth_usage": usage.get("hearth"),
    }

    t0 = time.monotonic()
    first = None
    text, progress, finish, last_usage = [], [], None, None
    for chunk in client.chat.completions.create(model="hearth", messages=ASK, stream=True):
        if first is None:
            first = time.monotonic() - t0
        extra = chunk.model_extra or {}
        if extra.get("hearth"):
            progress.append(extra["hearth"].get("type"))
        for c in chunk.choices:
            if c.delta and c.delta.content:
                text.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
        if chunk.usage:
            last_usage = chunk.usage.model_dump()
    out["stream"] = {
        "text": "".join(text),
        "progress": progress,
        "finish": finish,
        "usage_hearth": (last_usage or {}).get("hearth"),
        "first_chunk_s": first,
    }

    # X-Hearth-Sensitive: the task is served as sensitive (local backends only).
    r = client.chat.completions.create(
        model="hearth", messages=ASK, extra_headers={"X-Hearth-Sensitive": "true"}
    )
    plain_again = client.chat.completions.create(model="hearth", messages=ASK)
    out["sensitive"] = {
        "marked": r.usage.model_dump()["hearth"],
        "unmarked": plain_again.usage.model_dump()["hearth"],
    }

    # The same `user` is the same conversation (A2A contextId).
    ctx = []
    for _ in range(2):
        r = client.chat.completions.create(model="hearth", messages=ASK, user="ann")
        ctx.append(r.usage.model_dump()["hearth"]["context_id"])
    other = client.chat.completions.create(model="hearth", messages=ASK, user="bob")
    out["user"] = {"ann": ctx, "bob": other.usage.model_dump()["hearth"]["context_id"]}

    # temperature reaches the model calls of the task and of its subtask
    # (the scripted double says what it was sent); stop and max_tokens cut
    # the answer.
    say = [{"role": "user", "content": "scripted:temperature"}]
    hot = client.chat.completions.create(model="hearth", messages=say, temperature=0.25)
    cold = client.chat.completions.create(model="hearth", messages=say)
    stopped = client.chat.completions.create(model="hearth", messages=ASK, stop=["395"])
    short = client.chat.completions.create(model="hearth", messages=ASK, max_tokens=2)
    short_stream = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(
            model="hearth", messages=ASK, max_tokens=2, stream=True
        )
        if c.choices
    )
    out["limits"] = {
        "hot": hot.choices[0].message.content,
        "cold": cold.choices[0].message.content,
        "stopped": [stopped.choices[0].message.content, stopped.choices[0].finish_reason],
        "short": [short.choices[0].message.content, short.choices[0].finish_reason],
        "short_stream": short_stream,
    }

    # Embeddings with the memory's embedding model, as floats and as the
    # SDK's default base64 (decoded by the SDK).
    e = client.embeddings.create(model="hearth-embed", input=["a cat", "a kitten", "tax law"])
    f = client.embeddings.create(
        model="hearth-embed", input="a cat", encoding_format="float"
    )
    vecs = [d.embedding for d in e.data]

    def cos(a, b):
        return sum(x * y for x, y in zip(a, b)) / (
            sum(x * x for x in a) ** 0.5 * sum(y * y for y in b) ** 0.5
        )

    out["embeddings"] = {
        "count": len(vecs),
        "dims": len(vecs[0]),
        "model": e.model,
        "near": cos(vecs[0], vecs[1]),
        "far": cos(vecs[0], vecs[2]),
        "float_same": cos(vecs[0], f.data[0].embedding),
    }

    def error_of(fn):
        try:
            fn()
        except openai.APIStatusError as e:
            body = e.body if isinstance(e.body, dict) else {}
            return {"class": type(e).__name__, "status": e.status_code, "code": body.get("code")}
        return {"class": None}

    wrong = OpenAI(base_url=base, api_key="wrong-key", max_retries=0)
    out["errors"] = {
        "wrong_key": error_of(lambda: wrong.chat.completions.create(model="hearth", messages=ASK)),
        "unknown_model": error_of(lambda: client.chat.completions.create(model="gpt-9", messages=ASK)),
        "tools": error_of(
            lambda: client.chat.completions.create(
                model="hearth",
                messages=ASK,
                tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            )
        ),
        "no_messages": error_of(lambda: client.chat.completions.create(model="hearth", messages=[])),
        "hot": error_of(
            lambda: client.chat.completions.create(model="hearth", messages=ASK, temperature=5)
        ),
        "embed_model": error_of(lambda: client.embeddings.create(model="gpt-9", input="x")),
    }

    # A client that drops a stream after its first chunk; the gateway keeps serving.
    s = client.chat.completions.create(model="hearth", messages=ASK, stream=True)
    next(iter(s))
    s.close()
    r = client.chat.completions.create(model="hearth", messages=ASK)
    out["after_drop"] = r.choices[0].message.content
except Exception as e:  # noqa: BLE001 - report, the Rust side asserts
    out["fatal"] = f"{type(e).__name__}: {e}"

print(json.dumps(out))
