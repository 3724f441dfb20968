#!/usr/bin/env bash
# Fetch llama.cpp's tokenizer test vectors for tests/tokenizer/test_vocab.c:
# the vocab-only GGUF files and their .inp/.out pairs that llama.cpp keeps in
# models/ggml-vocab-*, as vendored in the llama-cpp-python sdist (the same
# pinned version ci/peer.sh builds).
#
#   ci/fetch-vocab.sh          fetch (or keep) the files, print the folder
#
# Where:  ${KESTREL_VOCAB_DIR:-$HOME/.cache/kestrel/vocab}
# Sdist:  llama_cpp_python-<ver>.tar.gz, reused from ci/peer.sh's download
#         folder when it is there, else downloaded once into
#         ${KESTREL_DOWNLOAD_DIR:-$HOME/.cache/kestrel/download}.
#
# The sdist is checked against its SHA-256 (the hash ci/peer.sh pins), and
# only vendor/llama.cpp/models/ggml-vocab-* is unpacked, into a temporary
# folder that is then renamed into place, so an interrupted run never leaves
# half the files under the final name. A second run with the files in place
# does nothing.
#
# `pip download --no-binary llama-cpp-python`, not `--no-binary :all:`: pip
# reads the sdist's metadata through its build backend, and with :all: it
# would first build every build dependency (scikit-build-core, hatchling,
# setuptools, ...) from source, which takes minutes and needs nothing here.
#
# Environment: KESTREL_VOCAB_DIR, KESTREL_PEER_VERSION (0.3.36),
# KESTREL_PEER_DIR, KESTREL_DOWNLOAD_DIR.
set -euo pipefail

VOCAB_DIR="${KESTREL_VOCAB_DIR:-$HOME/.cache/kestrel/vocab}"
VERSION="${KESTREL_PEER_VERSION:-0.3.36}"
PEER_DIR="${KESTREL_PEER_DIR:-$HOME/.cache/kestrel/peer}"
DL_DIR="${KESTREL_DOWNLOAD_DIR:-$HOME/.cache/kestrel/download}"
# sha256 of llama_cpp_python-0.3.36.tar.gz, as in ci/peer.sh
SDIST_SHA_0_3_36="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
SDIST="llama_cpp_python-$VERSION.tar.gz"
MEMBERS="llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-*"
STAMP="$VOCAB_DIR/.fetched-llama-cpp-python-$VERSION"

log() { printf 'fetch-vocab: %s\n' "$*" >&2; }
die() { printf 'fetch-vocab: error: %s\n' "$*" >&2; exit 1; }

if [ $# -gt 0 ]; then
    printf 'usage: %s   (files go to %s; set KESTREL_VOCAB_DIR to change)\n' \
        "$0" "$VOCAB_DIR" >&2
    exit 2
fi

# present: the stamp lists every file of the last complete run
present() {
    local f
    [ -f "$STAMP" ] || return 1
    while IFS= read -r f; do
        [ -f "$VOCAB_DIR/$f" ] || return 1
    done < "$STAMP"
    return 0
}

check_sdist() {
    local got
    if [ "$VERSION" = "0.3.36" ]; then
        got="$(sha256sum "$1" | cut -d' ' -f1)"
        [ "$got" = "$SDIST_SHA_0_3_36" ] ||
            die "$1: sha256 mismatch: expected $SDIST_SHA_0_3_36, found $got"
    else
        log "no pinned hash for version $VERSION; not checking the sdist hash"
    fi
}

find_sdist() {
    local p
    for p in "$PEER_DIR/download/$SDIST" "$DL_DIR/$SDIST"; do
        if [ -f "$p" ]; then
            printf '%s\n' "$p"
            return 0
        fi
    done
    return 1
}

download_sdist() {
    python3 -m pip --version >/dev/null 2>&1 ||
        die "python3 with pip is needed to download the llama-cpp-python sdist (apt-get install python3-pip)"
    mkdir -p "$DL_DIR"
    log "downloading the llama-cpp-python $VERSION sdist into $DL_DIR"
    python3 -m pip download --quiet --disable-pip-version-check --no-cache-dir \
        --no-deps --no-binary llama-cpp-python -d "$DL_DIR" \
        "llama-cpp-python==$VERSION" >&2 ||
        die "pip download llama-cpp-python==$VERSION failed"
    [ -f "$DL_DIR/$SDIST" ] || die "pip did not produce $DL_DIR/$SDIST"
}

TMP=""
cleanup() {
    if [ -n "$TMP" ] && [ -d "$TMP" ]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

main() {
    local sdist n
    if present; then
        log "already present: $VOCAB_DIR"
        printf '%s\n' "$VOCAB_DIR"
        return 0
    fi
    command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is required"
    sdist="$(find_sdist)" || { download_sdist; sdist="$DL_DIR/$SDIST"; }
    check_sdist "$sdist"
    mkdir -p "$VOCAB_DIR"
    TMP="$(mktemp -d "$VOCAB_DIR/.unpack.XXXXXX")"
    log "unpacking ggml-vocab-* from $sdist"
    tar -xzf "$sdist" -C "$TMP" --wildcards "$MEMBERS" ||
        die "$sdist holds no $MEMBERS"
    n=$(find "$TMP" -name 'ggml-vocab-*.gguf' | wc -l)
    [ "$n" -gt 0 ] || die "$sdist: no ggml-vocab-*.gguf under vendor/llama.cpp/models"
    (cd "$TMP/llama_cpp_python-$VERSION/vendor/llama.cpp/models" &&
        for f in ggml-vocab-*; do
            mv -f "$f" "$VOCAB_DIR/$f"
        done)
    (cd "$VOCAB_DIR" && ls ggml-vocab-*) > "$STAMP.tmp"
    mv -f "$STAMP.tmp" "$STAMP"
    log "ok: $n vocab files in $VOCAB_DIR"
    printf '%s\n' "$VOCAB_DIR"
}

main "$@"
