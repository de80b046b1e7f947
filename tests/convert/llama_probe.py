"""Runs llama.cpp on a GGUF in its own process and prints what the tests compare, as JSON.

Why a separate process: llama.cpp aborts the process on a bad model (a converter bug must fail a test, not
kill pytest), and torch and llama.cpp each bring their own OpenMP runtime, which should not share a process.

Input (argv[1], JSON): {"model": path, "tokens": [[ids...], ...], "texts": [...], "embedding": bool,
"lora": path|null, "generate": {"prompt": str, "max_tokens": n}|null}. Output: {"logits": [[[...]...]...]
(every position of each token list), "embeddings": [...], "tokens": [...] (texts tokenized without BOS),
"text": generated text, "n_vocab": n}. {"batch": [request, ...]} runs several models in one process and
prints a list of outputs (one process start instead of many).
"""

from __future__ import annotations

import json
import sys

import llama_cpp


def run(req: dict) -> dict:
    embedding = bool(req.get("embedding"))
    llm = llama_cpp.Llama(model_path=req["model"], n_ctx=128, n_batch=128, n_ubatch=128, n_threads=2,
                          embedding=embedding, logits_all=not embedding, lora_path=req.get("lora"),
                          seed=0, verbose=False)
    out: dict = {"n_vocab": llm.n_vocab(), "tokens": [], "logits": [], "embeddings": []}
    for text in req.get("texts", []):
        out["tokens"].append(llm.tokenize(text.encode(), add_bos=False, special=False))
    for ids in req.get("tokens", []):
        if embedding:
            out["embeddings"].append(llm.embed([ids], normalize=False)[0] if ids else [])
        else:
            llm.reset()
            llm.eval(ids)
            out["logits"].append(llm.scores[: len(ids)].tolist())
    for text in req.get("embed_texts", []):
        out["embeddings"].append(llm.embed(text, normalize=False))
    if req.get("generate"):
        g = req["generate"]
        res = llm.create_completion(g["prompt"], max_tokens=g.get("max_tokens", 8), temperature=0.0)
        out["text"] = res["choices"][0]["text"]
    if req.get("chat_template"):
        out["chat_template"] = llm.metadata.get("tokenizer.chat_template")
    llm.close()
    return out


def main() -> None:
    req = json.loads(sys.argv[1])
    print(json.dumps([run(r) for r in req["batch"]] if "batch" in req else run(req)))


if __name__ == "__main__":
    main()
