#!/usr/bin/env bash
# The main job: install the build tools, build Kestrel, fetch the default
# model (SmolLM2-135M-Instruct Q4_1) into ~/.cache/kestrel/models, then
# generate text with it, ask it a question through its chat template, and
# generate again on Vulkan when a device exists.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh
bash ci/build.sh >/dev/null
bash ci/fetch-models.sh smollm2
model="${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
echo "== kestrel run (greedy) ==" >&2
build/cli/kestrel run -m "$model" -p "The capital of France is" -n 32 --temp 0
echo "== kestrel chat ==" >&2
build/cli/kestrel chat -m "$model" -p "What is the capital of France? Answer in one sentence." -n 64 --temp 0
# The same on Vulkan when the machine has a Vulkan device (lavapipe, the
# software one ci/setup.sh installs, counts): the tokens are the CPU's.
if build/cli/kestrel devices 2>/dev/null | grep -q '^Vulkan devices: [1-9]'; then
    echo "== kestrel run --backend vulkan (greedy) ==" >&2
    build/cli/kestrel run -m "$model" -p "The capital of France is" -n 32 --temp 0 --backend vulkan
fi
