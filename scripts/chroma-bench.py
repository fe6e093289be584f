#!/usr/bin/env python3
"""Chroma's row in `kiln bench embed`: a whole `add()` of the same SciFact texts into an
in-memory Chroma collection with Chroma's default embedder (all-MiniLM-L6-v2 in ONNX Runtime,
f32, batches of 32 padded to 256 tokens), on all cores. Prints one JSON line:
{"texts_per_s": ..., "model": ...} or {"unavailable": "why"}.

Chroma's default embedder downloads its model file from Chroma's own server on first use.
Where that server cannot be reached (as on machines that only reach package registries) and
`--model-dir` is given, the same embedder class runs on the model file found there instead
(`kiln bench embed` writes Kiln's f32 graph of the same weights there, `onnx/model.onnx`, with
the model's `onnx/tokenizer.json`): Chroma's tokenisation, batching, ONNX Runtime session,
pooling and index are its own either way, and the answer says which model file ran.
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
    parser.add_argument("--model-dir", help="holds onnx/model.onnx and onnx/tokenizer.json")
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
        model = "Chroma's own download"
    except Exception as err:
        if not args.model_dir:
            print(json.dumps({"unavailable": f"Chroma's default embedder could not load its model: {err}"}))
            return
        embedder = provided_model(args.model_dir)
        embedder(["warm-up"])
        model = f"Kiln's f32 export in {args.model_dir} (Chroma's download failed: {type(err).__name__})"
    client = chromadb.EphemeralClient()
    collection = client.create_collection("bench", embedding_function=embedder)
    started = time.perf_counter()
    for i in range(0, len(docs), 100):
        batch = docs[i : i + 100]
        collection.add(ids=[str(i + k) for k in range(len(batch))], documents=batch)
    secs = time.perf_counter() - started
    print(json.dumps({"texts_per_s": len(docs) / secs, "version": chromadb.__version__, "model": model}))


def provided_model(model_dir):
    """Chroma's default embedder class, reading its files from `model_dir` (no download)."""
    from pathlib import Path

    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

    class Provided(ONNXMiniLM_L6_V2):
        DOWNLOAD_PATH = Path(model_dir)

        def _download_model_if_not_exists(self):
            for name in ("model.onnx", "tokenizer.json"):
                path = self.DOWNLOAD_PATH / self.EXTRACTED_FOLDER_NAME / name
                if not path.is_file():
                    raise FileNotFoundError(path)

    return Provided()


if __name__ == "__main__":
    main()
