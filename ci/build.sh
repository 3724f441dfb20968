#!/usr/bin/env bash
# Configures and builds Kestrel in build/ (release, warnings as errors).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f build/build.ninja ]; then
    meson setup build --buildtype=release -Dwerror=true >/dev/null
fi
ninja -C build
