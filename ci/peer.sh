#!/usr/bin/env bash
# Build the llama.cpp "peer" that Kestrel is compared against, outside the
# repository. Not part of the build or the tests; people run it by hand to
# reproduce tests/golden/*.json or to benchmark against llama.cpp.
#
#   ci/peer.sh            build (or reuse) the peer
#   ci/peer.sh --print    print the directory holding the binaries and exit
#
# Where:   ${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}
#   llama_cpp_python-<ver>/vendor/llama.cpp   the sources
#   build/bin/      llama-bench llama-completion llama-simple llama-tokenize
#                   llama-quantize llama-gguf llama-perplexity
#                   llama-speculative llama-server (when the sources have
#                   them), libllama.so, libggml*.so
#   bin/peer_greedy tests/golden/peer_greedy.c linked against that libllama
#   PEER-INFO.txt   version, llama.cpp commit, CMake flags
#
# The sources are llama.cpp as vendored in the llama-cpp-python sdist
# (pinned: KESTREL_PEER_VERSION, default 0.3.36, whose llama.cpp is of
# 2026-10-01). The build is portable, never -march=native: GGML_NATIVE=OFF
# with the x86 SIMD features named explicitly, the AVX-512 / AVX-VNNI ones only
# when /proc/cpuinfo lists them, and AMX always off (AMX is listed by CPUID on
# some of our machines yet faults in worker threads). About 12 minutes with
# two jobs. A second run with the binaries in place does nothing.
#
# Environment: KESTREL_PEER_DIR, KESTREL_PEER_VERSION, KESTREL_PEER_JOBS (2).
set -euo pipefail

PEER_DIR="${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}"
VERSION="${KESTREL_PEER_VERSION:-0.3.36}"
JOBS="${KESTREL_PEER_JOBS:-2}"
# sha256 of llama_cpp_python-0.3.36.tar.gz as downloaded on 2026-11-29
SDIST_SHA_0_3_36="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$PEER_DIR/llama_cpp_python-$VERSION/vendor/llama.cpp"
BUILD="$PEER_DIR/build"
BIN="$BUILD/bin"
TARGETS=(llama-bench llama-completion llama-simple llama-tokenize)
OPTIONAL_TARGETS=(llama-quantize llama-gguf llama-perplexity llama-speculative llama-server)

log() { printf 'peer: %s\n' "$*" >&2; }
die() { printf 'peer: error: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = "--print" ]; then
    printf '%s\n' "$BIN"
    exit 0
elif [ $# -gt 0 ]; then
    printf 'usage: %s [--print]\n' "$0" >&2
    exit 2
fi

# An optional target counts when this llama.cpp's sources define it.
optional_in_source() {
    grep -rqs "set(TARGET $1)" "$SRC/tools" "$SRC/examples"
}

have_all_binaries() {
    local t
    for t in "${TARGETS[@]}"; do
        [ -x "$BIN/$t" ] || return 1
    done
    for t in "${OPTIONAL_TARGETS[@]}"; do
        if optional_in_source "$t" && [ ! -x "$BIN/$t" ]; then
            return 1
        fi
    done
    [ -x "$PEER_DIR/bin/peer_greedy" ]
}

ensure_tools() {
    local missing=()
    command -v cmake >/dev/null 2>&1 || missing+=(cmake)
    command -v c++ >/dev/null 2>&1 || missing+=(g++)
    command -v cc >/dev/null 2>&1 || missing+=(gcc)
    command -v make >/dev/null 2>&1 || missing+=(make)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing ${missing[*]} with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
    else
        die "missing tools: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})"
    fi
}

fetch_sources() {
    [ -f "$SRC/CMakeLists.txt" ] && return 0
    local dl="$PEER_DIR/download" sdist
    mkdir -p "$dl"
    sdist="$dl/llama_cpp_python-$VERSION.tar.gz"
    if [ ! -f "$sdist" ]; then
        log "downloading the llama-cpp-python $VERSION sdist"
        python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir \
            --no-deps --no-binary :all: -d "$dl" "llama-cpp-python==$VERSION" >&2 ||
            die "pip download llama-cpp-python==$VERSION failed"
    fi
    [ -f "$sdist" ] || die "pip did not produce $sdist"
    if [ "$VERSION" = "0.3.36" ]; then
        local got
        got="$(sha256sum "$sdist" | cut -d' ' -f1)"
        [ "$got" = "$SDIST_SHA_0_3_36" ] ||
            die "$sdist: sha256 mismatch: expected $SDIST_SHA_0_3_36, found $got"
    else
        log "no pinned hash for version $VERSION; not checking the sdist hash"
    fi
    log "unpacking $sdist"
    tar -xzf "$sdist" -C "$PEER_DIR"
    [ -f "$SRC/CMakeLists.txt" ] || die "$SRC/CMakeLists.txt missing after unpacking"
}

cpu_has() {
    grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -qx "$1"
}

onoff() {
    if cpu_has "$1"; then echo ON; else echo OFF; fi
}

cmake_flags() {
    local avx512=OFF
    if cpu_has avx512f && cpu_has avx512cd && cpu_has avx512vl &&
        cpu_has avx512dq && cpu_has avx512bw; then
        avx512=ON
    fi
    local vbmi=OFF vnni512=OFF bf16=OFF
    if [ "$avx512" = ON ]; then
        vbmi="$(onoff avx512vbmi)"
        vnni512="$(onoff avx512_vnni)"
        bf16="$(onoff avx512_bf16)"
    fi
    printf '%s\n' \
        -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=OFF \
        -DLLAMA_CURL=OFF \
        -DLLAMA_OPENSSL=OFF \
        -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_SERVER=ON \
        -DGGML_AVX=ON \
        -DGGML_AVX2=ON \
        -DGGML_FMA=ON \
        -DGGML_F16C=ON \
        -DGGML_BMI2=ON \
        "-DGGML_AVX_VNNI=$(onoff avx_vnni)" \
        "-DGGML_AVX512=$avx512" \
        "-DGGML_AVX512_VBMI=$vbmi" \
        "-DGGML_AVX512_VNNI=$vnni512" \
        "-DGGML_AVX512_BF16=$bf16" \
        -DGGML_AMX_TILE=OFF \
        -DGGML_AMX_INT8=OFF \
        -DGGML_AMX_BF16=OFF
}

build_llama() {
    local flags targets=() t
    [ "$(uname -m)" = x86_64 ] || die "this script knows the x86-64 flags only (found $(uname -m))"
    for t in avx avx2 fma f16c bmi2; do
        cpu_has "$t" || die "the peer build assumes AVX, AVX2, FMA, F16C and BMI2; /proc/cpuinfo lacks $t"
    done
    mapfile -t flags < <(cmake_flags)
    log "configuring: ${flags[*]}"
    cmake -S "$SRC" -B "$BUILD" "${flags[@]}" > "$PEER_DIR/cmake-configure.log" 2>&1 ||
        die "cmake configure failed; see $PEER_DIR/cmake-configure.log"
    targets=("${TARGETS[@]}")
    for t in "${OPTIONAL_TARGETS[@]}"; do
        if optional_in_source "$t"; then
            targets+=("$t")
        fi
    done
    log "building ${targets[*]} with $JOBS jobs (about 12 minutes on 2 cores); log: $PEER_DIR/cmake-build.log"
    cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}" > "$PEER_DIR/cmake-build.log" 2>&1 ||
        die "build failed; see the end of $PEER_DIR/cmake-build.log"
    for t in "${TARGETS[@]}"; do
        [ -x "$BIN/$t" ] || die "$BIN/$t missing after the build"
    done
    {
        printf 'llama-cpp-python sdist: %s\n' "$VERSION"
        printf 'llama.cpp commit: %s\n' "$(git -C "$SRC" log -1 --format='%H %cI' 2>/dev/null || echo unknown)"
        printf 'built: %s on %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
        printf 'cmake flags: %s\n' "${flags[*]}"
    } > "$PEER_DIR/PEER-INFO.txt"
}

build_peer_greedy() {
    mkdir -p "$PEER_DIR/bin"
    log "compiling tests/golden/peer_greedy.c"
    cc -std=c11 -O2 -Wall -Wextra \
        -I"$SRC/include" -I"$SRC/ggml/include" \
        "$REPO_ROOT/tests/golden/peer_greedy.c" \
        -L"$BIN" -lllama -Wl,-rpath,"$BIN" \
        -o "$PEER_DIR/bin/peer_greedy" ||
        die "compiling peer_greedy failed"
}

main() {
    if have_all_binaries; then
        log "already built: $BIN (and $PEER_DIR/bin/peer_greedy)"
        printf '%s\n' "$BIN"
        return 0
    fi
    ensure_tools
    mkdir -p "$PEER_DIR"
    local t ok=1
    for t in "${TARGETS[@]}"; do
        [ -x "$BIN/$t" ] || ok=0
    done
    for t in "${OPTIONAL_TARGETS[@]}"; do
        if optional_in_source "$t" && [ ! -x "$BIN/$t" ]; then
            ok=0
        fi
    done
    if [ "$ok" = 0 ]; then
        fetch_sources
        build_llama
    fi
    build_peer_greedy
    log "done: binaries in $BIN, peer_greedy in $PEER_DIR/bin"
    printf '%s\n' "$BIN"
}

main "$@"
