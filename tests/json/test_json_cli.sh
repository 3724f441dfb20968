#!/bin/sh
# kestrel run --json-schema: the output on stdout is one value the schema
# accepts (python3 checks it), an unsupported keyword is a usage error
# (exit 2) naming it before any model loads, and speculation is refused.
# On the CPU (the Vulkan driver leaks under LeakSanitizer).
#   test_json_cli.sh KESTREL
set -u
K=$1
M=$HOME/.cache/kestrel/models/SmolLM2-135M-Instruct.Q4_1.gguf
T=$(mktemp -d /tmp/kestrel-json-cli-XXXXXX)
trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

printf '{"type":"string","pattern":"^a"}' > "$T/bad.json"
"$K" run -m /nonexistent.gguf --json-schema "$T/bad.json" -p x 2> "$T/err" > /dev/null
rc=$?
[ $rc -eq 2 ] || fail "unsupported schema: exit $rc, expected 2"
grep -q '"pattern" is not supported' "$T/err" || fail "message: $(cat "$T/err")"

if [ ! -f "$M" ]; then
    echo "skip: no model at $M"
    exit 77
fi
cat > "$T/s.json" <<'S'
{"type":"object","properties":{"name":{"type":"string","maxLength":20},
 "age":{"type":"integer"},"pets":{"type":"array","maxItems":3,
 "items":{"enum":["cat","dog","fish"]}}},"required":["name","age","pets"]}
S
for seed in 1 2 3; do
    "$K" run -m "$M" --backend cpu -t 2 --temp 1 --seed $seed -n 200 --json-schema "$T/s.json" \
        -p "Alice is 31 and has a dog. As JSON:" > "$T/out" 2> "$T/err" ||
        fail "run: $(cat "$T/err")"
    python3 - "$T/out" <<'P' || fail "seed $seed: $(cat "$T/out")"
import json, sys
v = json.load(open(sys.argv[1], encoding="utf-8"))
assert set(v) == {"name", "age", "pets"}, v
assert isinstance(v["name"], str) and len(v["name"]) <= 20
assert type(v["age"]) is int
assert isinstance(v["pets"], list) and len(v["pets"]) <= 3
assert all(p in ("cat", "dog", "fish") for p in v["pets"])
print("ok", json.dumps(v))
P
done
"$K" run -m "$M" --backend cpu -t 2 --spec lookup --temp 0 -n 20 --json-schema "$T/s.json" -p x \
    > /dev/null 2> "$T/err" && fail "speculation with a schema was not refused"
grep -q "json_schema and speculative" "$T/err" || fail "message: $(cat "$T/err")"
echo "PASS"
