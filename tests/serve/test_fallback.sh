#!/usr/bin/env bash
# Cloud fallback in kestrel serve, on loopback: a second kestrel serve
# (a larger context) stands in for the cloud. Routed there when the request
# asks and when the prompt does not fit the local context; streamed and
# not; every answer says its route. Faulty upstreams (fault_upstream.py:
# HTTP 500, a stream cut short, malformed JSON, slower than the deadline):
# the text received so far is kept and the local model goes on, or, when
# the prompt cannot run locally, a clean OpenAI-format error that still
# carries the text so far. --privacy strict sends nothing. The log names
# the host and the bytes, never the content.
# Usage: test_fallback.sh KESTREL_BINARY FAULT_UPSTREAM_PY
set -u
KESTREL=$1 FAULT=$2
MODEL=${KESTREL_SHARED_DIR:-/nonexistent}/models/stories260K/stories260K-f32.gguf
if [ ! -r "$MODEL" ]; then
    echo "SKIP: stories260K is absent (set KESTREL_SHARED_DIR to ../shared)"; exit 77
fi
TMP=$(mktemp -d)
PIDS=()
fails=0
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    wait 2>/dev/null
    rm -rf "$TMP"
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# serve NAME ARGS...: a kestrel serve on a free port; sets URL, SPID
serve() {
    local name=$1; shift
    "$KESTREL" serve -m "$MODEL" --backend cpu -t 1 --port 0 "$@" 2>"$TMP/$name.log" &
    SPID=$!
    PIDS+=($SPID)
    for _ in $(seq 1 200); do
        port=$(sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/$name.log")
        [ -n "$port" ] && { URL="http://127.0.0.1:$port"; return 0; }
        kill -0 $SPID 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/$name.log"; echo "FAIL: kestrel serve $name did not start"; exit 1
}
stop() { kill "$1" 2>/dev/null; wait "$1" 2>/dev/null; }
# start_fault MODE: sets FURL, FPID
start_fault() {
    python3 "$FAULT" "$@" >"$TMP/fault.port" 2>"$TMP/fault.log" &
    FPID=$!
    PIDS+=($FPID)
    for _ in $(seq 1 100); do
        port=$(sed -n 's/^port //p' "$TMP/fault.port")
        [ -n "$port" ] && { FURL="http://127.0.0.1:$port"; return 0; }
        sleep 0.1
    done
    echo "FAIL: the fault upstream did not start"; exit 1
}
# post NAME URL BODY: the answer in $TMP/NAME.json, the status in $TMP/NAME.code
post() {
    curl -s -m 60 -o "$TMP/$1.json" -w '%{http_code}' -H 'Content-Type: application/json' \
        --data-binary "$3" "$2" >"$TMP/$1.code"
}
# check NAME CODE EXPR: the status, and a Python expression over the JSON
# answer (d), or for a stream (s: the events' objects, text: their text)
check() {
    local name=$1 code=$2 expr=$3
    if [ "$(cat "$TMP/$name.code")" != "$code" ]; then
        fail "$name: HTTP $(cat "$TMP/$name.code"), expected $code: $(head -c 400 "$TMP/$name.json")"; return
    fi
    python3 - "$TMP/$name.json" "$expr" "$TMP" <<'PY' && ok "$name" || fail "$name: $expr: $(head -c 600 "$TMP/$name.json")"
import json, sys
raw = open(sys.argv[1]).read()
tmp = sys.argv[3]
ref = lambda name: json.load(open(tmp + "/" + name + ".json"))
d, s, text = None, [], ""
if raw.startswith("data:") or raw.startswith(":"):
    for ev in raw.split("\n\n"):
        if ev.startswith("data: ") and ev != "data: [DONE]":
            s.append(json.loads(ev[6:]))
    for e in s:
        for c in e.get("choices", []):
            text += c.get("text") or (c.get("delta") or {}).get("content") or ""
    assert raw.endswith("data: [DONE]\n\n"), "no [DONE]"
else:
    d = json.loads(raw)
sys.exit(0 if eval(sys.argv[2]) else 1)
PY
}

P='"prompt":"Once upon a time","max_tokens":12,"temperature":0'
ASK='"kestrel":{"route":"fallback"}'
LONG=$(python3 -c 'print("Once upon a time there was a little girl. " * 12)')

# the cloud: the same model with a large context
KESTREL_SERVE_TOKEN_DELAY_MS=30 serve cloud -c 512   # slow: pieces come apart
CLOUD=$URL CLOUD_PID=$SPID
post ref "$CLOUD/v1/completions" "{$P}"
check ref 200 'd["kestrel"]["route"] == "local" and d["choices"][0]["text"]'
post ref_long "$CLOUD/v1/completions" "{\"prompt\":\"$LONG\",\"max_tokens\":8,\"temperature\":0}"
check ref_long 200 'd["choices"][0]["text"]'
post ref_chat "$CLOUD/v1/chat/completions" '{"messages":[{"role":"user","content":"Hi"}],"max_tokens":8,"temperature":0}'
check ref_chat 200 'd["choices"][0]["message"]["content"] is not None'

# the device: a 64-token context, the cloud as its fallback
serve local -c 64 --fallback-url "$CLOUD/v1" --fallback-key sk-test --fallback-timeout 1000
LOCAL=$URL
post local_plain "$LOCAL/v1/completions" "{$P}"
check local_plain 200 'd["kestrel"]["route"] == "local" and d["choices"][0]["text"] == ref("ref")["choices"][0]["text"]'
post asked "$LOCAL/v1/completions" "{$P,$ASK}"
check asked 200 'd["kestrel"] == {"route": "fallback", "why": "the request asks for it"} and d["choices"][0]["text"] == ref("ref")["choices"][0]["text"]'
post asked_stream "$LOCAL/v1/completions" "{$P,$ASK,\"stream\":true}"
check asked_stream 200 'text == ref("ref")["choices"][0]["text"] and s[-1]["kestrel"]["route"] == "fallback" and s[-1]["choices"][0]["finish_reason"] and len(s) > 3'
post asked_chat "$LOCAL/v1/chat/completions" "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"max_tokens\":8,\"temperature\":0,\"stream\":true,$ASK}"
check asked_chat 200 'text == ref("ref_chat")["choices"][0]["message"]["content"] and s[-1]["kestrel"]["route"] == "fallback" and s[0]["object"] == "chat.completion.chunk"'
post too_long "$LOCAL/v1/completions" "{\"prompt\":\"$LONG\",\"max_tokens\":8,\"temperature\":0}"
check too_long 200 'd["kestrel"]["route"] == "fallback" and "does not fit" in d["kestrel"]["why"] and d["choices"][0]["text"] == ref("ref_long")["choices"][0]["text"]'
post too_long_local "$LOCAL/v1/completions" "{\"prompt\":\"$LONG\",\"max_tokens\":8,\"kestrel\":{\"route\":\"local\"}}"
check too_long_local 400 'd["error"]["code"] == "context_length_exceeded"'
post bad_route "$LOCAL/v1/completions" "{$P,\"kestrel\":{\"route\":\"moon\"}}"
check bad_route 400 'd["error"]["param"] == "kestrel" and d["error"]["type"] == "invalid_request_error"'
post bad_field "$LOCAL/v1/completions" "{$P,\"kestrel\":{\"where\":1}}"
check bad_field 400 'd["error"]["code"] == "unknown_parameter"'
if grep -q "Once upon" "$TMP/local.log"; then fail "the log holds a prompt: $(cat "$TMP/local.log")"; fi
grep -q "fallback: cmpl-[0-9]*: [0-9]* bytes to 127.0.0.1 (the request asks for it)" "$TMP/local.log" &&
    grep -q "bytes of text from 127.0.0.1" "$TMP/local.log" && ok "the log: host and bytes" ||
    fail "the log: $(cat "$TMP/local.log")"
curl -s "$LOCAL/metrics" | grep -q '^kestrel_fallback_requests_total [1-9]' && ok "metrics" || fail "metrics"
stop "$SPID"

# the confidence rule: above the threshold, nothing local is shown and the
# fallback answers; below it, the local answer, its reading in kestrel
post ref_stop "$CLOUD/v1/completions" "{$P,\"stop\":\"was\"}"
check ref_stop 200 'd["choices"][0]["text"] and d["choices"][0]["finish_reason"] == "stop"'
serve unsure -c 64 --fallback-url "$CLOUD/v1" --fallback-when-unsure 0.001 --unsure-tokens 4
post unsure "$URL/v1/completions" "{$P}"
check unsure 200 'd["kestrel"]["route"] == "fallback" and "unsure" in d["kestrel"]["why"] and d["kestrel"]["entropy_tokens"] == 4 and d["kestrel"]["entropy"] > 0.001 and d["choices"][0]["text"] == ref("ref")["choices"][0]["text"]'
post unsure_stream "$URL/v1/completions" "{$P,\"stream\":true}"
check unsure_stream 200 'text == ref("ref")["choices"][0]["text"] and "unsure" in s[-1]["kestrel"]["why"]'
post unsure_local "$URL/v1/completions" "{$P,\"kestrel\":{\"route\":\"local\"}}"
check unsure_local 200 'd["kestrel"]["route"] == "local" and d["choices"][0]["text"] == ref("ref")["choices"][0]["text"]'
stop "$SPID"
serve sure -c 64 --fallback-url "$CLOUD/v1" --fallback-when-unsure 50 --unsure-tokens 4
post sure "$URL/v1/completions" "{$P,\"stream\":true}"
check sure 200 'text == ref("ref")["choices"][0]["text"] and s[-1]["kestrel"]["route"] == "local" and s[-1]["kestrel"]["entropy_tokens"] == 4'
post sure_stop "$URL/v1/completions" "{$P,\"stop\":\"was\"}"
check sure_stop 200 'd["kestrel"]["route"] == "local" and d["choices"][0]["text"] == ref("ref_stop")["choices"][0]["text"] and d["choices"][0]["finish_reason"] == "stop"'
if grep -q "fallback: cmpl" "$TMP/sure.log"; then fail "sure: a request went out"; fi
stop "$SPID"

# a local model that fails to run (NaN in its output norm: the logits are
# not finite) before it showed anything: the fallback answers
NAN=$TMP/nan.gguf
cp "$MODEL" "$NAN"
"$KESTREL" info --json "$MODEL" >"$TMP/info.json"
python3 - "$TMP/info.json" "$NAN" <<'PY' || { echo "FAIL: cannot write the NaN model"; exit 1; }
import json, struct, sys
t = [t for t in json.load(open(sys.argv[1]))["tensors"] if t["name"] == "output_norm.weight"][0]
with open(sys.argv[2], "r+b") as f:
    f.seek(t["offset"])
    f.write(struct.pack("<f", float("nan")) * (t["bytes"] // 4))
PY
MODEL_OK=$MODEL MODEL=$NAN
serve nan -c 64 --fallback-url "$CLOUD/v1"
post nan "$URL/v1/completions" "{$P}"
check nan 200 'd["kestrel"]["route"] == "fallback" and "failed to run" in d["kestrel"]["why"] and d["choices"][0]["text"] == ref("ref")["choices"][0]["text"]'
post nan_local "$URL/v1/completions" "{$P,\"kestrel\":{\"route\":\"local\"}}"
check nan_local 500 'd["error"]["type"] == "server_error" and d["kestrel"]["route"] == "local"'
stop "$SPID"
MODEL=$MODEL_OK

# faults: the text so far kept, the local model goes on from it
for fault in "http500:HTTP 500" "sse_cut:stopped before its end" \
             "sse_garbage:malformed JSON" "slow:deadline"; do
    mode=${fault%%:*} why=${fault#*:}
    start_fault "$mode"
    serve "f_$mode" -c 64 --fallback-url "$FURL/v1" --fallback-timeout 1000
    post "f_$mode" "$URL/v1/completions" "{$P,$ASK}"
    part='""'; [ "${mode#sse}" != "$mode" ] && part='"Hello world"'
    check "f_$mode" 200 'd["kestrel"]["route"] == "local" and "'"$why"'" in d["kestrel"]["why"] and d["choices"][0]["text"].startswith('"$part"') and len(d["choices"][0]["text"]) > len('"$part"')'
    post "f_${mode}_stream" "$URL/v1/completions" "{$P,$ASK,\"stream\":true}"
    check "f_${mode}_stream" 200 'text.startswith('"$part"') and len(text) > len('"$part"') and s[-1]["kestrel"]["route"] == "local" and "'"$why"'" in s[-1]["kestrel"]["why"]'
    # a prompt that cannot run here: a clean error, the text so far in it
    post "f_${mode}_long" "$URL/v1/completions" "{\"prompt\":\"$LONG\",\"max_tokens\":8}"
    check "f_${mode}_long" 502 'd["error"]["type"] == "server_error" and "'"$why"'" in d["error"]["message"] and d["kestrel"]["route"] == "fallback" and d["kestrel"]["text"] == '"$part"
    post "f_${mode}_long_stream" "$URL/v1/completions" "{\"prompt\":\"$LONG\",\"max_tokens\":8,\"stream\":true}"
    check "f_${mode}_long_stream" 200 'text == '"$part"' and "error" in s[-1] and s[-1]["kestrel"]["route"] == "fallback"'
    stop "$SPID"
    stop "$FPID"
done

# --privacy strict: nothing goes out, whatever is asked
start_fault http500
serve strict -c 64 --fallback-url "$FURL/v1" --privacy strict
post strict_asked "$URL/v1/completions" "{$P,$ASK}"
check strict_asked 200 'd["kestrel"]["route"] == "local" and "privacy strict" in d["kestrel"]["why"] and d["choices"][0]["text"] == ref("ref")["choices"][0]["text"]'
post strict_long "$URL/v1/completions" "{\"prompt\":\"$LONG\",\"max_tokens\":8}"
check strict_long 400 'd["error"]["code"] == "context_length_exceeded" and "privacy strict" in d["error"]["message"]'
if grep -q request "$TMP/fault.log"; then fail "strict: a request went out"; fi
grep -q "privacy strict: nothing is sent to $FURL" "$TMP/strict.log" && ok "strict: logged" || fail "strict: not logged"
stop "$SPID"

# kestrel chat --fallback-url: the same routes from the command line
# chat NAME ARGS...: kestrel chat --json, the answer in $TMP/NAME.json
chat() {
    local name=$1; shift
    timeout 60 "$KESTREL" chat -m "$MODEL" -t 1 --backend cpu --temp 0 -n 8 "$@" \
        >"$TMP/$name.json" 2>"$TMP/$name.err"
    echo "$?" | sed 's/^0$/200/' >"$TMP/$name.code"
}
chat chat_asked -p Hi --json --fallback-url "$CLOUD/v1" --route fallback
check chat_asked 200 'd["route"] == "fallback" and d["text"] == ref("ref_chat")["choices"][0]["message"]["content"]'
grep -q "fallback: [0-9]* bytes to 127.0.0.1 (the request asks for it)" "$TMP/chat_asked.err" &&
    ! grep -q '"Hi"' "$TMP/chat_asked.err" && ok "chat: the log" || fail "chat log: $(cat "$TMP/chat_asked.err")"
chat chat_long -c 32 -p "$LONG" --json --fallback-url "$CLOUD/v1"
check chat_long 200 'd["route"] == "fallback" and "does not fit" in d["route_why"]'
start_fault sse_cut
timeout 60 "$KESTREL" chat -m "$MODEL" -t 1 --backend cpu --temp 0 -n 8 -p Hi \
    --fallback-url "$FURL/v1" --route fallback >"$TMP/chat_cut.out" 2>"$TMP/chat_cut.err"
rc=$?
[ $rc = 0 ] && grep -q "^Hello world." "$TMP/chat_cut.out" && grep -q "stopped before its end" "$TMP/chat_cut.err" &&
    grep -q "local model goes on" "$TMP/chat_cut.err" && ok "chat: a cut stream, kept, the local model goes on" ||
    fail "chat_cut: exit $rc: $(cat "$TMP/chat_cut.out" "$TMP/chat_cut.err")"
chat chat_strict -p Hi --json --fallback-url "$FURL/v1" --route fallback --privacy strict
check chat_strict 200 '"route" not in d'
[ "$(grep -c request "$TMP/fault.log")" = 1 ] && ok "chat strict: nothing sent" || fail "chat strict: $(cat "$TMP/fault.log")"
stop "$FPID"

if [ "$fails" -ne 0 ]; then echo "$fails failure(s)"; exit 1; fi
echo "all passed"
