#!/usr/bin/env bash
# Runs test_openai.py with the real `openai` package from PyPI, installed
# into a virtualenv (never into the system Python): VENV, else reused from
# ~/.cache/kestrel/serve-venv when that one already has it.
# Usage: test_openai.sh KESTREL_BINARY TEST_OPENAI_PY VENV_DIR
set -u
KESTREL=$1 SCRIPT=$2 VENV=$3
# stories260K from the shared folder, else the default model from the cache
# (ci/fetch-models.sh puts it there)
MODEL=${KESTREL_SHARED_DIR:-/nonexistent}/models/stories260K/stories260K-f32.gguf
[ -r "$MODEL" ] || MODEL=$HOME/.cache/kestrel/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -r "$MODEL" ]; then
    echo "SKIP: neither stories260K (set KESTREL_SHARED_DIR) nor $MODEL (ci/fetch-models.sh)"; exit 77
fi
echo "model: $MODEL"
CACHED=$HOME/.cache/kestrel/serve-venv
if [ -x "$CACHED/bin/python" ] && "$CACHED/bin/python" -c 'import openai' 2>/dev/null; then
    VENV=$CACHED
elif ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import openai' 2>/dev/null; }; then
    if ! python3 -m venv "$VENV" >"$VENV.log" 2>&1; then
        echo "SKIP: cannot create a virtualenv at $VENV (python3-venv missing?):"
        tail -3 "$VENV.log"; exit 77
    fi
    if ! "$VENV/bin/pip" install -q openai >>"$VENV.log" 2>&1; then
        echo "SKIP: cannot install the openai package into $VENV (offline?):"
        tail -3 "$VENV.log"; exit 77
    fi
fi
echo "openai $("$VENV/bin/python" -c 'import openai; print(openai.__version__)') from $VENV"
exec "$VENV/bin/python" "$SCRIPT" "$KESTREL" "$MODEL"
