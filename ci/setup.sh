#!/usr/bin/env bash
# Installs what building and testing Kestrel needs on Debian 12, as root.
# Idempotent: packages already present are not reinstalled.
set -euo pipefail

pkgs=(build-essential clang meson ninja-build pkg-config check
      python3 python3-pip unzip ca-certificates
      libvulkan-dev mesa-vulkan-drivers vulkan-validationlayers vulkan-tools
      glslang-dev glslang-tools spirv-tools libdrm-dev libclang-rt-14-dev gnuplot-nox
      libmicrohttpd-dev libcjson-dev libcurl4-openssl-dev curl python3-venv
      gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user check:arm64 libc6:arm64)

# The aarch64 cross build (ci/arm.sh) takes check from Debian's arm64
# multiarch packages; it is built without Vulkan, so nothing else is needed.
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
dpkg --print-foreign-architectures | grep -qx arm64 ||
    $SUDO dpkg --add-architecture arm64

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "ci/setup.sh: installing ${missing[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
