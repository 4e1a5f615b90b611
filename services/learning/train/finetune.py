#!/usr/bin/env python3
"""Hearth LoRA trainer: fine-tune the local GGUF model and write a llama.cpp LoRA adapter.

Standalone: needs only Python and the packages in requirements.txt (no hearth binary),
so the same command runs on a laptop CPU or on a rented GPU machine.

Pipeline
  1. read rows (JSONL) that Hearth's engine rendered with llama.cpp's own tokenizer;
  2. load the base weights straight from the GGUF with Transformers (de-quantized);
  3. train LoRA adapters with PEFT in a plain torch loop, loss on completion tokens only;
  4. write the adapter as a GGUF LoRA file (general.type=adapter, adapter.type=lora)
     that llama.cpp loads with --lora / llama_adapter_lora_init.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

EPILOG = """\
data format (one JSON object a line):
  {"prompt": "<bos><start_of_turn>user\\n...<end_of_turn>\\n<start_of_turn>model\\n",
   "completion": "{\\"answer\\": \\"4\\"}<end_of_turn>",
   "prompt_ids": [2, 105, ...], "completion_ids": [...], "source": "synth|trace|rejection"}
  The ids are the normal path (rendered by llama.cpp's tokenizer, BOS included in
  prompt_ids). Rows without ids are tokenized here with the GGUF's tokenizer (BOS is
  added to the prompt only). Loss is on completion_ids only. A row over --max-len loses
  tokens from the left of its prompt (the BOS is kept); the completion is never cut, and
  a row whose completion alone does not fit is skipped with a warning.

output (GGUF LoRA, loaded by llama.cpp's --lora):
  general.architecture = the base's (gemma3), general.type = adapter, adapter.type = lora,
  adapter.lora.alpha (f32), hearth.base_sha256, hearth.rank, hearth.targets;
  tensors blk.N.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight.lora_a
  (ne [in, r]) and .lora_b (ne [r, out]), float32. llama.cpp scales by alpha / r.

examples:
  python3 finetune.py --model gemma-3-270m-q4_k_m.gguf --data rows.jsonl --out adapter.gguf
  python3 finetune.py --model m.gguf --data rows.jsonl --out a.gguf --device cpu \\
      --rank 4 --max-steps 3 --report report.json

exit status: 0 done, 2 bad input or arguments (one line on stderr), 1 other failure.
"""

# HF module name -> GGUF tensor base name (per layer)
HF_TO_GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}
SHORT_TARGETS = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}
ATTN = {"q_proj", "k_proj", "v_proj", "o_proj"}
# GGUF architectures whose llama.cpp conversion permutes Q/K rows and whose Transformers
# loader un-permutes them (LlamaTensorProcessor), so LoRA B for q/k would need the same
# permutation). gemma/gemma2/gemma3 do not permute; refuse rather than write a wrong adapter.
PERMUTED_QK_ARCHS = {"llama"}
IGNORE = -100


class InputError(Exception):
    """Bad input: reported as one line, exit status 2."""


@dataclass
class Example:
    ids: list[int]
    n_prompt: int
    source: str

    @property
    def n_completion(self) -> int:
        return len(self.ids) - self.n_prompt


def log(msg: str) -> None:
    print(f"[finetune] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- arguments


def parse_targets(spec: str) -> list[str]:
    out: list[str] = []
    for raw in spec.split(","):
        t = raw.strip().lower()
        if not t:
            continue
        if t == "all":
            out.extend(HF_TO_GGUF)
            continue
        name = SHORT_TARGETS.get(t, t)
        if name not in HF_TO_GGUF:
            raise InputError(
                f"unknown target {raw!r}; choose from {','.join(SHORT_TARGETS)} (or all)"
            )
        out.append(name)
    if not out:
        raise InputError("--targets is empty")
    return list(dict.fromkeys(out))  # keep order, drop duplicates


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="finetune.py",
        description="Train a LoRA adapter for a GGUF base model on prompt/completion rows "
        "and write it as a llama.cpp GGUF LoRA adapter.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--model", required=True, metavar="PATH.gguf",
                    help="base model GGUF (e.g. gemma-3-270m-q4_k_m.gguf); de-quantized to train")
    io.add_argument("--data", required=True, metavar="rows.jsonl[.gz]",
                    help="training rows, JSONL (see 'data format' below)")
    io.add_argument("--out", required=True, metavar="adapter.gguf",
                    help="where to write the GGUF LoRA adapter (written to OUT.part, then renamed)")
    io.add_argument("--report", metavar="report.json",
                    help="also write a JSON report (loss, steps, tokens/s, versions, ...)")
    io.add_argument("--base-sha256", metavar="HEX",
                    help="sha256 of the base GGUF to record in the adapter (hashed here if not given)")
    io.add_argument("--save-peft", metavar="DIR",
                    help="also save the adapter in PEFT's own format (safetensors) to DIR")

    lo = p.add_argument_group("LoRA")
    lo.add_argument("--rank", type=int, default=32, help="LoRA rank r (default 32)")
    lo.add_argument("--alpha", type=float, default=64.0,
                    help="LoRA alpha; the update is scaled by alpha/r (default 64)")
    lo.add_argument("--dropout", type=float, default=0.05, help="LoRA dropout (default 0.05)")
    lo.add_argument("--targets", default="q,k,v,o",
                    help="modules to adapt, comma-separated from q,k,v,o,gate,up,down or 'all' "
                    "(default: the attention projections q,k,v,o — in llama.cpp every adapted "
                    "matrix adds graph nodes to each decoded token, and on a 2-core CPU all seven "
                    "cost ~13%% of decode speed, attention alone ~2%%)")

    tr = p.add_argument_group("training")
    tr.add_argument("--epochs", type=float, default=2, help="passes over the data (default 2)")
    tr.add_argument("--lr", type=float, default=2e-4, help="peak learning rate (default 2e-4)")
    tr.add_argument("--batch", type=int, default=8, help="rows per optimizer step (default 8)")
    tr.add_argument("--max-len", type=int, default=1536,
                    help="max tokens per row; longer prompts are cut from the left (default 1536)")
    tr.add_argument("--max-steps", type=int, default=0,
                    help="stop after N optimizer steps (default: run all epochs)")
    tr.add_argument("--warmup", type=float, default=0.05,
                    help="warmup fraction of the steps, then linear decay to 0 (default 0.05)")
    tr.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay (default 0)")
    tr.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                    help="auto = cuda when available (bf16), else cpu (float32)")
    tr.add_argument("--seed", type=int, default=0, help="seed for shuffling and LoRA init (default 0)")
    tr.add_argument("--log-every", type=int, default=10,
                    help="log a line every N steps when stderr is not a terminal (default 10)")
    return p


def validate_args(a: argparse.Namespace) -> None:
    if not Path(a.model).is_file():
        raise InputError(f"model file not found: {a.model}")
    if not Path(a.data).is_file():
        raise InputError(f"data file not found: {a.data}")
    if a.rank < 1:
        raise InputError("--rank must be >= 1")
    if a.alpha <= 0:
        raise InputError("--alpha must be > 0")
    if a.batch < 1:
        raise InputError("--batch must be >= 1")
    if a.max_len < 2:
        raise InputError("--max-len must be >= 2")
    if a.epochs <= 0:
        raise InputError("--epochs must be > 0")
    if a.max_steps < 0:
        raise InputError("--max-steps must be >= 0")
    if not 0 <= a.dropout < 1:
        raise InputError("--dropout must be in [0, 1)")
    if a.base_sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", a.base_sha256):
        raise InputError("--base-sha256 must be 64 hex digits")
    out_dir = Path(a.out).resolve().parent
    if not out_dir.is_dir():
        raise InputError(f"output directory does not exist: {out_dir}")
    a.target_modules = parse_targets(a.targets)


# ---------------------------------------------------------------------------- data


def read_rows(path: str) -> list[dict]:
    rows = []
    # A gzipped export (`rows.jsonl.gz`) is read as it is: it is what fits
    # through a small upload to a GPU machine.
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{n}: a row must be a JSON object")
            has_ids = isinstance(row.get("completion_ids"), list) and len(row["completion_ids"]) > 0
            has_text = isinstance(row.get("completion"), str) and row["completion"] != ""
            if not has_ids and not has_text:
                raise InputError(f"{path}:{n}: row has no completion (completion or completion_ids)")
            for key in ("prompt_ids", "completion_ids"):
                ids = row.get(key)
                if ids is not None and not (
                    isinstance(ids, list) and all(isinstance(t, int) and t >= 0 for t in ids)
                ):
                    raise InputError(f"{path}:{n}: {key} must be a list of non-negative ints")
            row["_line"] = n
            rows.append(row)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def rows_need_tokenizer(rows: list[dict]) -> bool:
    return any(
        not row.get("completion_ids") or row.get("prompt_ids") is None for row in rows
    )


def tokenize_rows(rows, tokenizer, bos_id, vocab_size, max_len, data_path):
    examples: list[Example] = []
    skipped = truncated = 0
    for row in rows:
        where = f"{data_path}:{row['_line']}"
        p_ids = row.get("prompt_ids")
        c_ids = row.get("completion_ids")
        if p_ids is None or not c_ids:
            if tokenizer is None:
                raise InputError(f"{where}: row lacks ids and no tokenizer is loaded")
            if p_ids is None:
                p_ids = tokenizer.encode(row.get("prompt") or "", add_special_tokens=False)
                if bos_id is not None and (not p_ids or p_ids[0] != bos_id):
                    p_ids = [bos_id] + p_ids
            if not c_ids:
                c_ids = tokenizer.encode(row.get("completion") or "", add_special_tokens=False)
        if not c_ids:
            raise InputError(f"{where}: completion tokenizes to nothing")
        if not p_ids:
            if bos_id is None:
                raise InputError(f"{where}: empty prompt and the model has no BOS token")
            p_ids = [bos_id]  # the first completion token needs a position before it
        bad = next((t for t in list(p_ids) + list(c_ids) if t >= vocab_size), None)
        if bad is not None:
            raise InputError(f"{where}: token id {bad} is outside the model's vocab ({vocab_size})")
        if len(c_ids) > max_len - 1:
            skipped += 1
            continue
        if len(p_ids) + len(c_ids) > max_len:
            room = max_len - len(c_ids)
            keep_bos = bos_id is not None and p_ids and p_ids[0] == bos_id
            if keep_bos and room >= 2:
                p_ids = [p_ids[0]] + list(p_ids[len(p_ids) - (room - 1):])
            else:
                p_ids = list(p_ids[len(p_ids) - room:])
            truncated += 1
        examples.append(Example(list(p_ids) + list(c_ids), len(p_ids), str(row.get("source", ""))))
    if skipped:
        log(f"warning: skipped {skipped} row(s) whose completion alone exceeds --max-len {max_len}")
    if truncated:
        log(f"note: cut the prompt from the left in {truncated} row(s) to fit --max-len {max_len}")
    if not examples:
        raise InputError("no usable rows after applying --max-len")
    return examples


def make_batches(examples: list[Example], batch: int, rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within large chunks by length (less padding), then shuffle batches."""
    idx = list(range(len(examples)))
    rng.shuffle(idx)
    chunk = batch * 32
    batches = []
    for s in range(0, len(idx), chunk):
        part = sorted(idx[s:s + chunk], key=lambda i: len(examples[i].ids))
        batches.extend(part[j:j + batch] for j in range(0, len(part), batch))
    rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int, torch):
    n = max(len(e.ids) for e in examples)
    input_ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    attn = torch.zeros((len(examples), n), dtype=torch.long)
    for r, e in enumerate(examples):
        t = torch.tensor(e.ids, dtype=torch.long)
        input_ids[r, : len(e.ids)] = t
        attn[r, : len(e.ids)] = 1
        labels[r, e.n_prompt: len(e.ids)] = t[e.n_prompt:]
    return input_ids, attn, labels


# ---------------------------------------------------------------------------- model


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gguf_field_str(reader, key: str) -> str | None:
    field = reader.fields.get(key)
    if field is None:
        return None
    try:
        return field.contents()
    except AttributeError:  # older gguf
        return bytes(field.parts[field.data[0]]).decode("utf-8")


def read_base_gguf(path: str):
    """Architecture and tensor shapes (ne order) of the base GGUF, for the loader's checks."""
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - any parse failure means "not a usable GGUF"
        raise InputError(f"{path}: cannot read as GGUF ({type(e).__name__}: {e})") from None
    arch = gguf_field_str(reader, "general.architecture")
    if not arch:
        raise InputError(f"{path}: no general.architecture (not a GGUF model?)")
    shapes = {t.name: [int(x) for x in t.shape] for t in reader.tensors}
    return arch, shapes


def masked_lm_loss(model, input_ids, attn, labels, torch):
    """Cross-entropy on completion tokens, computing the (262k-wide) head only where needed.

    Falls back to the model's own loss when the model does not have the usual layout."""
    base = model.get_base_model()
    body = getattr(base, "model", None)
    head = getattr(base, "lm_head", None)
    if body is None or head is None:
        out = model(input_ids=input_ids, attention_mask=attn, labels=labels, use_cache=False)
        return out.loss
    hidden = body(input_ids=input_ids, attention_mask=attn, use_cache=False).last_hidden_state
    tgt = labels[:, 1:]
    sel = tgt != IGNORE
    h = hidden[:, :-1][sel]
    logits = head(h).float()
    cap = getattr(base.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, tgt[sel], reduction="mean")


def collect_lora(model, target_modules):
    """(gguf_base_name, A [r,in], B [out,r]) as float32 numpy, for every adapted layer."""
    pat = re.compile(r"(?:^|\.)layers\.(\d+)\.(?:self_attn|mlp)\.(\w+)$")
    out = []
    for name, mod in model.named_modules():
        if not (hasattr(mod, "lora_A") and hasattr(mod, "lora_B")):
            continue
        if "default" not in getattr(mod, "lora_A", {}):
            continue
        m = pat.search(name)
        if not m or m.group(2) not in HF_TO_GGUF:
            raise RuntimeError(f"unexpected LoRA module {name}")
        layer, proj = int(m.group(1)), m.group(2)
        a = mod.lora_A["default"].weight.detach().float().cpu().numpy()
        b = mod.lora_B["default"].weight.detach().float().cpu().numpy()
        out.append((f"blk.{layer}.{HF_TO_GGUF[proj]}.weight", a, b))
    out.sort(key=lambda t: (int(t[0].split(".")[1]), t[0]))
    return out


def write_adapter(path: str, arch: str, base_shapes, lora, alpha: float, rank: int,
                  base_sha: str, targets: list[str]) -> None:
    import gguf
    import numpy as np

    for name, a, b in lora:
        if name not in base_shapes:
            raise RuntimeError(f"{name} is not a tensor of the base GGUF")
        ne = base_shapes[name]  # [in, out] for a 2-D weight
        # llama.cpp's checks: model.ne[0] == a.ne[0], model.ne[1] == b.ne[1], a.ne[1] == b.ne[0]
        # numpy shapes are reversed ne: a (r, in) -> ne [in, r]; b (out, r) -> ne [r, out]
        if a.shape != (rank, ne[0]) or b.shape != (ne[1], rank):
            raise RuntimeError(
                f"{name}: lora shapes A{a.shape} B{b.shape} do not fit base ne {ne} at rank {rank}"
            )
    part = path + ".part"
    w = gguf.GGUFWriter(part, arch=arch)  # writes general.architecture
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
    w.add_string("general.name", "hearth-lora")
    w.add_string("hearth.base_sha256", base_sha.lower())
    w.add_uint32("hearth.rank", int(rank))
    w.add_string("hearth.targets", ",".join(targets))
    for name, a, b in lora:
        w.add_tensor(name + ".lora_a", np.ascontiguousarray(a, dtype=np.float32))
        w.add_tensor(name + ".lora_b", np.ascontiguousarray(b, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(part, path)


# ---------------------------------------------------------------------------- main


def train(a: argparse.Namespace) -> dict:
    t_start = time.time()
    rows = read_rows(a.data)  # fail fast, before the heavy imports

    import torch
    import transformers
    import peft
    import gguf
    from transformers import AutoModelForCausalLM

    if a.device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    else:
        device = a.device
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda but torch sees no CUDA device")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    random.seed(a.seed)
    torch.manual_seed(a.seed)

    arch, base_shapes = read_base_gguf(a.model)
    if arch in PERMUTED_QK_ARCHS and ({"q_proj", "k_proj"} & set(a.target_modules)):
        raise InputError(f"architecture {arch} permutes Q/K in GGUF; q/k targets are unsupported")
    base_sha = a.base_sha256 or sha256_file(a.model)

    model_dir, model_file = os.path.split(os.path.abspath(a.model))
    t0 = time.time()
    log(f"loading {model_file} ({arch}) on {device} as {str(dtype).replace('torch.', '')}")
    model = AutoModelForCausalLM.from_pretrained(model_dir, gguf_file=model_file, dtype=dtype)
    model.to(device)
    model.config.use_cache = False
    cfg = model.config
    vocab_size = int(getattr(cfg, "vocab_size", 0) or model.get_input_embeddings().num_embeddings)
    bos_id = getattr(cfg, "bos_token_id", None)
    pad_id = getattr(cfg, "pad_token_id", None)
    tokenizer = None
    if rows_need_tokenizer(rows):
        from transformers import AutoTokenizer

        log("some rows lack ids: loading the GGUF's tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(model_dir, gguf_file=model_file)
        if bos_id is None:
            bos_id = tokenizer.bos_token_id
        if pad_id is None:
            pad_id = tokenizer.pad_token_id
    if isinstance(bos_id, list):
        bos_id = bos_id[0]
    if pad_id is None:
        pad_id = 0  # any id works: padded positions are masked out and carry no loss
    load_s = time.time() - t0
    log(f"loaded in {load_s:.1f}s")

    examples = tokenize_rows(rows, tokenizer, bos_id, vocab_size, a.max_len, a.data)

    names = "|".join(a.target_modules)
    lcfg = peft.LoraConfig(
        r=a.rank,
        lora_alpha=a.alpha,
        lora_dropout=a.dropout,
        bias="none",
        task_type="CAUSAL_LM",
        # a regex (full match) so that only decoder-layer projections are adapted
        target_modules=rf".*layers\.\d+\.(self_attn|mlp)\.({names})",
    )
    model = peft.get_peft_model(model, lcfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    log(f"LoRA r={a.rank} alpha={a.alpha:g} on {','.join(a.target_modules)}: "
        f"{trainable:,} trainable of {total:,} params")

    rng = random.Random(a.seed)
    per_epoch = math.ceil(len(examples) / a.batch)
    planned = max(1, math.ceil(per_epoch * a.epochs))
    steps_total = min(planned, a.max_steps) if a.max_steps else planned
    warmup = min(steps_total - 1, max(1, round(a.warmup * steps_total))) if steps_total > 1 else 0

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=a.weight_decay, betas=(0.9, 0.999))

    def lr_at(step: int) -> float:  # step counts from 0
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return max(0.0, (steps_total - step) / max(1, steps_total - warmup))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    use_bar = sys.stderr.isatty()
    bar = None
    if use_bar:
        try:
            from tqdm import tqdm

            bar = tqdm(total=steps_total, unit="step", dynamic_ncols=True)
        except ImportError:
            use_bar = False

    log(f"{len(examples)} rows, batch {a.batch}, {per_epoch} steps/epoch, "
        f"{steps_total} steps, warmup {warmup}")
    model.train()
    step = 0
    non_finite = 0  # batches skipped for a non-finite loss or gradient
    tokens_seen = 0  # real (non-pad) input tokens
    train_tokens = 0  # completion tokens that carry loss
    step_times: list[float] = []
    epoch_loss: dict[int, list[float]] = {}  # epoch -> [loss*tokens, tokens]
    epoch = 0
    t_train = time.time()
    window_loss, window_tok, window_t0 = 0.0, 0, time.time()
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else None
    )
    while step < steps_total:
        for batch_idx in make_batches(examples, a.batch, rng):
            if step >= steps_total:
                break
            ts = time.time()
            batch = [examples[i] for i in batch_idx]
            input_ids, attn, labels = collate(batch, pad_id, torch)
            input_ids, attn, labels = input_ids.to(device), attn.to(device), labels.to(device)
            if autocast is not None:
                with autocast:
                    loss = masked_lm_loss(model, input_ids, attn, labels, torch)
            else:
                loss = masked_lm_loss(model, input_ids, attn, labels, torch)
            # A batch whose loss or gradient is not finite (bf16 overflow in
            # one odd batch) is skipped, never applied: one NaN update makes
            # every weight NaN. Too many such batches mean the run is unstable.
            finite = bool(torch.isfinite(loss))
            if finite:
                loss.backward()
                finite = bool(torch.isfinite(torch.nn.utils.clip_grad_norm_(params, 1.0)))
            if finite:
                opt.step()
            else:
                non_finite += 1
                log(f"step {step + 1}: loss or gradient not finite; batch skipped ({non_finite} so far)")
                if non_finite > max(3, steps_total // 50):
                    raise RuntimeError(f"{non_finite} batches with a non-finite loss or gradient "
                                       f"by step {step + 1}; try a lower --lr")
            sched.step()
            opt.zero_grad(set_to_none=True)
            if not finite:
                step += 1
                continue

            lv = float(loss.item())
            n_tok = int(attn.sum().item())
            n_lab = sum(e.n_completion for e in batch)
            tokens_seen += n_tok
            train_tokens += n_lab
            acc = epoch_loss.setdefault(epoch, [0.0, 0])
            acc[0] += lv * n_lab
            acc[1] += n_lab
            window_loss += lv * n_lab
            window_tok += n_lab
            step += 1
            step_times.append(time.time() - ts)
            elapsed = time.time() - t_train
            tps = tokens_seen / elapsed if elapsed > 0 else 0.0
            if bar is not None:
                bar.set_postfix(loss=f"{lv:.4f}", ep=epoch + 1, tok_s=f"{tps:.0f}")
                bar.update(1)
            elif step == 1 or step % a.log_every == 0 or step == steps_total:
                wl = window_loss / max(1, window_tok)
                log(f"step {step}/{steps_total} epoch {epoch + 1} loss {wl:.4f} "
                    f"lr {sched.get_last_lr()[0]:.2e} {tps:.0f} tok/s "
                    f"({time.time() - window_t0:.1f}s)")
                window_loss, window_tok, window_t0 = 0.0, 0, time.time()
        epoch += 1
    if bar is not None:
        bar.close()
    train_s = time.time() - t_train
    last = epoch_loss[max(epoch_loss)]
    final_loss = last[0] / max(1, last[1])
    tps = tokens_seen / train_s if train_s > 0 else 0.0
    epochs_done = step / per_epoch
    print(f"final loss {final_loss:.4f} (mean over the last epoch), {step} steps, "
          f"{epochs_done:.2f} epochs, {tps:.0f} tokens/s, {train_s:.1f}s training", flush=True)

    model.eval()
    lora = collect_lora(model, a.target_modules)
    if not lora:
        raise RuntimeError("no LoRA weights found in the trained model")
    write_adapter(a.out, arch, base_shapes, lora, a.alpha, a.rank, base_sha, a.target_modules)
    log(f"wrote {a.out} ({len(lora) * 2} tensors, {os.path.getsize(a.out):,} bytes)")
    if a.save_peft:
        model.save_pretrained(a.save_peft)
        log(f"saved PEFT adapter to {a.save_peft}")

    report = {
        "out": os.path.abspath(a.out),
        "model": os.path.abspath(a.model),
        "architecture": arch,
        "base_sha256": base_sha.lower(),
        "rows": len(examples),
        "rows_read": len(rows),
        "steps": step,
        "skipped_non_finite": non_finite,
        "epochs": round(epochs_done, 4),
        "final_loss": final_loss,
        "epoch_losses": [v[0] / max(1, v[1]) for _, v in sorted(epoch_loss.items())],
        "train_tokens": train_tokens,
        "tokens_seen": tokens_seen,
        "seconds": round(train_s, 3),
        "load_seconds": round(load_s, 3),
        "total_seconds": round(time.time() - t_start, 3),
        "mean_step_seconds": round(sum(step_times) / len(step_times), 4),
        "tokens_per_second": round(tps, 2),
        "device": device,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "cuda_max_memory_gib": (
            round(torch.cuda.max_memory_allocated() / 2**30, 3) if device == "cuda" else None
        ),
        "dtype": str(dtype).replace("torch.", ""),
        "rank": a.rank,
        "alpha": a.alpha,
        "dropout": a.dropout,
        "lr": a.lr,
        "batch": a.batch,
        "max_len": a.max_len,
        "seed": a.seed,
        "targets": a.target_modules,
        "trainable_params": trainable,
        "lora_tensors": len(lora) * 2,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "gguf": _version("gguf", gguf),
        },
    }
    if a.report:
        tmp = a.report + ".part"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, a.report)
    return report


def _version(dist: str, mod) -> str:
    v = getattr(mod, "__version__", None)
    if v:
        return v
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        validate_args(args)
        train(args)
    except InputError as e:
        print(f"finetune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("finetune: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
