#!/usr/bin/env bash
# The aarch64 build and its tests under qemu-user (issue 12): cross-builds
# with ci/aarch64-linux-gnu.ini (CPU only: no Vulkan) into build-arm, then
# runs, through meson's exe_wrapper (qemu-aarch64):
#   - the quant suite's kernel tests under CPU models with and without the
#     dotprod and i8mm extensions, each checking that HWCAP selects the
#     level the model has and that every level present is bit-identical
#     to scalar (and so to llama.cpp's hashes);
#   - the base, gguf, tokenizer and targets unit suites, the synthetic
#     model tests (scalar and SIMD agree) and the golden tokens of
#     stories260K (needs ../shared; the cached real models are left out:
#     too slow under emulation) on the "max" model. The session suite
#     passes too but takes over a minute emulated; it is left out.
# qemu proves the instructions compute what the tests expect; it says
# nothing about speed. Prints meson's summaries; exits non-zero on a
# failure. About 3-4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash ci/setup.sh

[ -f build-arm/build.ninja ] ||
    meson setup build-arm --cross-file ci/aarch64-linux-gnu.ini \
        --buildtype=debugoptimized -Dwerror=true -Dvulkan=disabled >/dev/null
ninja -C build-arm

nomodels=$(mktemp -d)
trap 'rmdir "$nomodels"' EXIT
rc=0
# qemu 7.2's models: cortex-a53 is ARMv8.0 (NEON only), cortex-a76 has
# dotprod without i8mm, max has both.
for cpu in cortex-a53:neon cortex-a76:neon-dotprod max:neon-i8mm; do
    echo "== aarch64 under qemu -cpu ${cpu%%:*}: expecting ${cpu#*:} ==" >&2
    QEMU_CPU=${cpu%%:*} KESTREL_TEST_EXPECT_SIMD=${cpu#*:} CK_RUN_CASE=simd \
        meson test -C build-arm --print-errorlogs --timeout-multiplier 2 quant || rc=1
done
echo "== aarch64 under qemu -cpu max: unit and model suites ==" >&2
QEMU_CPU=max KESTREL_MODEL_DIR=$nomodels \
    meson test -C build-arm --print-errorlogs --timeout-multiplier 2 \
    quant base gguf tokenizer targets model-synthetic golden || rc=1
exit $rc
