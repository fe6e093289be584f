#!/usr/bin/env bash
# The official Aitronos Python client (PyPI aitronos-sdk 5.0.0, pinned with its dependencies
# by version) in a venv under the cache, for tests/sdk.rs. Idempotent; prints the venv's
# python. Usage: scripts/sdk-venv.sh
set -euo pipefail
VENV="${KILN_SDK_VENV:-/var/cache/kiln/sdk/venv-5.0.0}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import aitronos' 2>/dev/null; then
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet --disable-pip-version-check \
        aitronos-sdk==5.0.0 httpx==0.29.0 pydantic==2.14.4 >&2
fi
echo "$VENV/bin/python"
