#!/usr/bin/env bash
# Remote verification on loopback: a `kestrel serve` holds the target, and
# `kestrel run --verify-url` drafts with a synthetic draft (the target with
# its output norm perturbed, so that some drafts are rejected). Greedy
# output equals the target alone. Faulty upstreams (fault_upstream.py:
# HTTP 500, malformed JSON, slower than the deadline, a hang-up mid-body,
# a server that answers a few rounds and then goes away) and an
# unreachable one: exit 0, the text so far kept, the local model goes on,
# and the stats say so. --privacy strict sends nothing.
# Usage: test_remote.sh KESTREL_BINARY FAULT_UPSTREAM_PY
set -u
KESTREL=$1 FAULT=$2
MODEL=${KESTREL_SHARED_DIR:-/nonexistent}/models/stories260K/stories260K-f32.gguf
[ -r "$MODEL" ] || MODEL=$HOME/.cache/kestrel/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -r "$MODEL" ]; then
    echo "SKIP: neither stories260K (set KESTREL_SHARED_DIR) nor $MODEL (ci/fetch-models.sh)"; exit 77
fi
echo "model: $MODEL"
TMP=$(mktemp -d)
PIDS=()
fails=0
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# the draft: the target with its output norm's weights scaled unevenly
DRAFT=$TMP/draft.gguf
cp "$MODEL" "$DRAFT"
"$KESTREL" info --json "$MODEL" >"$TMP/info.json"
python3 - "$TMP/info.json" "$DRAFT" <<'PY' || { echo "FAIL: cannot write the draft"; exit 1; }
import json, math, struct, sys
d = json.load(open(sys.argv[1]))
t = [t for t in d["tensors"] if t["name"] == "output_norm.weight"][0]
assert t["type"] == "F32", t
n = t["bytes"] // 4
with open(sys.argv[2], "r+b") as f:
    f.seek(t["offset"])
    w = struct.unpack("<%df" % n, f.read(n * 4))
    f.seek(t["offset"])
    f.write(struct.pack("<%df" % n, *(x * (1 + 0.6 * math.sin(7 * i))
                                      for i, x in enumerate(w))))
PY

N=40
PROMPT="Once upon a time"
COMMON=(-t 1 --backend cpu --temp 0 -p "$PROMPT" -n $N --json)
# run NAME ARGS...: kestrel run, stdout/stderr/status in $TMP/NAME.*
run() {
    local name=$1; shift
    timeout 60 "$KESTREL" run "$@" >"$TMP/$name.out" 2>"$TMP/$name.err"
    echo $? >"$TMP/$name.rc"
}
# check NAME EXPR: status 0 and the Python expression over the JSON (d),
# the target's (t) and the draft's (a) outputs holds
check() {
    local name=$1 expr=$2
    if [ "$(cat "$TMP/$name.rc")" != 0 ]; then
        fail "$name: exit $(cat "$TMP/$name.rc"): $(head -c 400 "$TMP/$name.err")"; return
    fi
    python3 - "$TMP/$name.out" "$TMP/target.out" "$TMP/alone.out" "$expr" <<'PY' &&
import json, sys
d, t, a = (json.load(open(p)) for p in sys.argv[1:4])
r = d["stats"].get("remote", {})
if not eval(sys.argv[4]):
    print("got:", d["ids"], d["stop"], r)
    print("target:", t["ids"])
    print("draft alone:", a["ids"])
    sys.exit(1)
PY
        ok "$name" || fail "$name: $expr"
}
start_target() {
    "$KESTREL" serve -m "$MODEL" --backend cpu -t 1 --port 0 2>"$TMP/target.log" &
    PIDS+=($!)
    TPID=$!
    for _ in $(seq 1 200); do
        port=$(tr '\n' '|' < "$TMP/target.log" |
               sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\)|.*/\1/p')
        [ -n "$port" ] && { TARGET="http://127.0.0.1:$port"; return 0; }
        sleep 0.1
    done
    cat "$TMP/target.log"; echo "FAIL: the target server did not start"; exit 1
}
# start_fault MODE [ARGS]: sets FURL
start_fault() {
    python3 "$FAULT" "$@" >"$TMP/fault.port" 2>"$TMP/fault.log" &
    PIDS+=($!)
    FPID=$!
    for _ in $(seq 1 100); do
        port=$(sed -n 's/^port //p' "$TMP/fault.port")
        [ -n "$port" ] && { FURL="http://127.0.0.1:$port"; return 0; }
        sleep 0.1
    done
    echo "FAIL: the fault upstream did not start"; exit 1
}

run target -m "$MODEL" "${COMMON[@]}"
run alone -m "$DRAFT" "${COMMON[@]}"
python3 - "$TMP/target.out" "$TMP/alone.out" <<'PY' || fail "the draft alone should differ from the target (else the test proves little)"
import json, sys
t, a = (json.load(open(p)) for p in sys.argv[1:3])
print("target:", t["ids"]); print("draft alone:", a["ids"])
sys.exit(0 if t["ids"] != a["ids"] else 1)
PY

start_target
# -- greedy remote verification is token-identical to the target alone
run remote -m "$DRAFT" "${COMMON[@]}" --verify-url "$TARGET"
check remote 'd["ids"] == t["ids"] and d["stop"] == t["stop"] and r["requests"] > 0 and r["n_accepted"] < r["n_drafted"] and not r["lost"] and r["n_local"] == 0'
# a trailing slash, fixed draft lengths 1 and 8
run remote1 -m "$DRAFT" "${COMMON[@]}" --verify-url "$TARGET/" --draft-max 1
check remote1 'd["ids"] == t["ids"] and not r["lost"] and r["n_drafted"] <= r["requests"]'
run remote8 -m "$DRAFT" "${COMMON[@]}" --verify-url "$TARGET" --draft-min 8 --draft-max 8
check remote8 'd["ids"] == t["ids"] and not r["lost"]'
# the draft is the target: every drafted token accepted (stories260K's f32:
# verification computes tokens bitwise as decoding them does)
run self -m "$MODEL" "${COMMON[@]}" --verify-url "$TARGET"
check self 'd["ids"] == t["ids"] and r["n_accepted"] > 0'

# -- faults: exit 0, the local model alone, the stats say why
for fault in "http500:HTTP 500" "garbage:not a verification answer" \
             "slow:Timeout" "hangup:partial"; do
    mode=${fault%%:*} why=${fault#*:}
    start_fault "$mode"
    run "f_$mode" -m "$DRAFT" "${COMMON[@]}" --verify-url "$FURL" --verify-timeout 1000
    check "f_$mode" 'd["ids"] == a["ids"] and d["stop"] == a["stop"] and r["lost"] and "'"$why"'" in r["why"] and r["n_local"] == len(a["ids"]) and r["requests"] == 0'
    kill "$FPID" 2>/dev/null
done
run unreachable -m "$DRAFT" "${COMMON[@]}" --verify-url http://127.0.0.1:9 --verify-timeout 1000
check unreachable 'd["ids"] == a["ids"] and r["lost"] and "connect" in r["why"] and r["n_local"] == len(a["ids"])'
# without --json the stats line says so too
timeout 60 "$KESTREL" run -m "$DRAFT" -t 1 --backend cpu --temp 0 -p "$PROMPT" -n 4 \
    --verify-url http://127.0.0.1:9 --verify-timeout 1000 >/dev/null 2>"$TMP/plain.err"
grep -q "remote verification: 0 requests.*given up: .*connect" "$TMP/plain.err" &&
    ok "the stats line says the server was given up" ||
    fail "stats line: $(cat "$TMP/plain.err")"

# -- the upstream answers 2 rounds, then goes away: its tokens are kept (the
# target's), the local model goes on from them, N tokens in all
start_fault after "$TARGET" 2
run midway -m "$DRAFT" "${COMMON[@]}" --verify-url "$FURL" --verify-timeout 1000
check midway 'r["requests"] == 2 and r["lost"] and r["n_remote"] > 0 and d["ids"][:r["n_remote"]] == t["ids"][:r["n_remote"]] and r["n_remote"] + r["n_local"] == len(d["ids"]) > r["n_remote"]'
kill "$FPID" 2>/dev/null

# -- --privacy strict: nothing goes out, whatever --verify-url says
start_fault http500
run strict -m "$DRAFT" "${COMMON[@]}" --verify-url "$FURL" --privacy strict
check strict 'd["ids"] == a["ids"] and "remote" not in d["stats"]'
if grep -q request "$TMP/fault.log"; then fail "strict: a request went out"; fi
grep -q "nothing is sent to $FURL" "$TMP/strict.err" || fail "strict: not logged"
kill "$FPID" 2>/dev/null

# -- cloud fallback (kestrel run --fallback-url): a kestrel serve stands in
# for the cloud. Routed there when asked, when the prompt does not fit the
# local context, when the local model fails to load; a failing upstream is
# a clean error; --privacy strict sends nothing.
FB=(--fallback-url "$TARGET/v1" --fallback-key k --fallback-model big)
runfb() { local name=$1; shift
    timeout 60 "$KESTREL" run -t 1 --backend cpu --temp 0 -p "$PROMPT" -n 8 --json "$@" \
        >"$TMP/$name.out" 2>"$TMP/$name.err"; echo $? >"$TMP/$name.rc"; }
# fbcheck NAME RC EXPR: exit status RC and the Python expression over the JSON (d)
fbcheck() {
    local name=$1 rc=$2 expr=$3
    if [ "$(cat "$TMP/$name.rc")" != "$rc" ]; then
        fail "$name: exit $(cat "$TMP/$name.rc"), expected $rc: $(head -c 400 "$TMP/$name.err")"; return
    fi
    [ -z "$expr" ] && { ok "$name"; return; }
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if ($expr) else 1)" \
        "$TMP/$name.out" && ok "$name" || fail "$name: $expr: $(head -c 400 "$TMP/$name.out")"
}
curl -s -o "$TMP/fbref.json" --data-binary "{\"prompt\":\"$PROMPT\",\"max_tokens\":8,\"temperature\":0}" "$TARGET/v1/completions"
REF=$(python3 -c "import json; print(json.dumps(json.load(open('$TMP/fbref.json'))['choices'][0]['text']))")
runfb fb_asked -m "$DRAFT" "${FB[@]}" --route fallback
fbcheck fb_asked 0 'd["route"] == "fallback" and "asks" in d["route_why"] and d["text"] == '"$REF"
grep -q "fallback: the prompt (16 bytes) goes to $TARGET/v1/completions" "$TMP/fb_asked.err" &&
    ! grep -q "$PROMPT" "$TMP/fb_asked.err" && ok "fallback log: where and how much, no content" ||
    fail "fallback log: $(cat "$TMP/fb_asked.err")"
runfb fb_ctx -m "$DRAFT" -c 2 "${FB[@]}"
fbcheck fb_ctx 0 'd["route"] == "fallback" and "does not fit" in d["route_why"] and d["text"] == '"$REF"
runfb fb_load -m "$TMP/missing.gguf" "${FB[@]}"
fbcheck fb_load 0 'd["route"] == "fallback" and "failed to load" in d["route_why"]'
runfb fb_local -m "$DRAFT" "${FB[@]}"
fbcheck fb_local 0 '"route" not in d and d["ids"] == '"$(python3 -c "import json; print(json.load(open('$TMP/alone.out'))['ids'][:8])")"
runfb fb_strict -m "$DRAFT" -c 2 "${FB[@]}" --privacy strict
fbcheck fb_strict 3 ''
grep -q "privacy strict: nothing is sent" "$TMP/fb_strict.err" || fail "fb_strict: not logged"
start_fault http500
runfb fb_500 -m "$DRAFT" --fallback-url "$FURL/v1" --route fallback
fbcheck fb_500 1 ''
grep -q "fallback: .*HTTP 500" "$TMP/fb_500.err" || fail "fb_500: $(cat "$TMP/fb_500.err")"
kill "$FPID" 2>/dev/null
start_fault http500
runfb fb_strict2 -m "$DRAFT" --fallback-url "$FURL/v1" --route fallback --privacy strict
fbcheck fb_strict2 0 '"route" not in d'
if grep -q request "$TMP/fault.log"; then fail "fb_strict2: a request went out"; fi
kill "$FPID" 2>/dev/null

# -- the endpoint's own errors
code=$(curl -s -o "$TMP/body" -w '%{http_code}' --data-binary '{"tokens":[1,99999999],"draft":[]}' "$TARGET/v1/kestrel/verify")
[ "$code" = 400 ] && grep -q '"param":"tokens"' "$TMP/body" && ok "verify: a bad id is a 400" || fail "verify bad id: $code $(cat "$TMP/body")"
code=$(curl -s -o "$TMP/body" -w '%{http_code}' --data-binary '{"tokens":[1],"draft":"x"}' "$TARGET/v1/kestrel/verify")
[ "$code" = 400 ] && grep -q '"param":"draft"' "$TMP/body" && ok "verify: a wrong type is a 400" || fail "verify wrong type: $code $(cat "$TMP/body")"
code=$(curl -s -o "$TMP/body" -w '%{http_code}' --data-binary '{"tokens":[1],"session":2}' "$TARGET/v1/kestrel/verify")
[ "$code" = 400 ] && grep -q '"code":"unknown_parameter"' "$TMP/body" && ok "verify: an unknown field is a 400" || fail "verify unknown: $code $(cat "$TMP/body")"
code=$(curl -s -o "$TMP/body" -w '%{http_code}' --data-binary '{"tokens":[1],' "$TARGET/v1/kestrel/verify")
[ "$code" = 400 ] && grep -q '"code":"invalid_json"' "$TMP/body" && ok "verify: bad JSON is a 400" || fail "verify bad JSON: $code $(cat "$TMP/body")"

if [ "$fails" -ne 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "all passed"
