#!/usr/bin/env python3
"""Chroma's row in `kiln bench embed`: a whole `add()` of the same SciFact texts into an
in-memory Chroma collection with Chroma's default embedder (all-MiniLM-L6-v2 in ONNX Runtime),
on all cores. Prints one JSON line: {"texts_per_s": ...} or {"unavailable": "why"}.

Chroma's default embedder downloads its model from Chroma's own server on first use; where
that server cannot be reached (as on machines that only reach package registries) the row is
reported unavailable with the reason, never estimated.
"""

import argparse
import gzip
import json
import time


def texts(corpus, n):
    opener = gzip.open if corpus.endswith(".gz") else open
    out = []
    with opener(corpus, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            title, text = doc.get("title", ""), doc.get("text", "")
            out.append(f"{title}\n\n{text}" if title else text)
            if len(out) >= n:
                break
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--texts", type=int, default=1000)
    args = parser.parse_args()
    try:
        import chromadb
        from chromadb.utils import embedding_functions
    except Exception as err:  # not installed, or broken
        print(json.dumps({"unavailable": f"python package chromadb: {err}"}))
        return
    docs = texts(args.corpus, args.texts)
    try:
        embedder = embedding_functions.DefaultEmbeddingFunction()
        embedder(["warm-up"])  # fetches the model on first use
    except Exception as err:
        print(json.dumps({"unavailable": f"Chroma's default embedder could not load its model: {err}"}))
        return
    client = chromadb.EphemeralClient()
    collection = client.create_collection("bench", embedding_function=embedder)
    started = time.perf_counter()
    for i in range(0, len(docs), 100):
        batch = docs[i : i + 100]
        collection.add(ids=[str(i + k) for k in range(len(batch))], documents=batch)
    secs = time.perf_counter() - started
    print(json.dumps({"texts_per_s": len(docs) / secs, "version": chromadb.__version__}))


if __name__ == "__main__":
    main()
