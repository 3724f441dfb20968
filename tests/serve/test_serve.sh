#!/usr/bin/env bash
# kestrel serve driven by curl on loopback: SSE framing, the OpenAI error
# format for each bad request, stop strings, the API key, 503 when the
# queue is full, a client that goes away mid-stream freeing its slot,
# response_format (constrained JSON output), and
# SIGTERM draining a running request. The server runs on the CPU: the
# HTTP side is under test (and the Vulkan driver leaks under LeakSanitizer).
# Usage: test_serve.sh KESTREL_BINARY
set -u
KESTREL=$1
# stories260K from the shared folder, else the default model from the cache
# (ci/fetch-models.sh puts it there)
MODEL=${KESTREL_SHARED_DIR:-/nonexistent}/models/stories260K/stories260K-f32.gguf
[ -r "$MODEL" ] || MODEL=$HOME/.cache/kestrel/models/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -r "$MODEL" ]; then
    echo "SKIP: neither stories260K (set KESTREL_SHARED_DIR) nor $MODEL (ci/fetch-models.sh)"; exit 77
fi
echo "model: $MODEL"
command -v curl >/dev/null || { echo "SKIP: curl absent"; exit 77; }
TMP=$(mktemp -d)
PID=
fails=0
cleanup() {
    [ -n "$PID" ] && kill "$PID" 2>/dev/null
    jobs -p | while read -r p; do kill "$p" 2>/dev/null; done
    rm -rf "$TMP"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
ok() { echo "ok: $*"; }

# start_server ARGS...: sets PID and URL once the server listens.
start_server() {
    # a context of 512 (stories260K's own): the long prompts below exceed it
    "$KESTREL" serve -m "$MODEL" --backend cpu --port 0 -c 512 "$@" 2>"$TMP/server.log" &
    PID=$!
    for _ in $(seq 1 200); do
        # only a whole line: the port may be half written yet
        port=$(tr '\n' '|' < "$TMP/server.log" |
               sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\)|.*/\1/p')
        [ -n "$port" ] && { URL="http://127.0.0.1:$port"; return 0; }
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    cat "$TMP/server.log"; echo "FAIL: the server did not start"; exit 1
}
stop_server() {
    kill -TERM "$PID"; wait "$PID"; local rc=$?; PID=; return $rc
}
# post PATH BODY [curl args]: prints the HTTP status, the body in $TMP/body
post() {
    local path=$1 body=$2; shift 2
    curl -s -o "$TMP/body" -w '%{http_code}' -H 'Content-Type: application/json' \
         "$@" --data-binary "$body" "$URL$path"
}
# json EXPR: evaluates a Python expression over the body as j
json() {
    python3 -c "import json,sys; j=json.load(open('$TMP/body')); r=($1)
print(', '.join(map(str, r)) if isinstance(r, tuple) else r)"
}
# expect_error STATUS PARAM BODY [PATH]: an OpenAI-format error
expect_error() {
    local want=$1 param=$2 body=$3 path=${4:-/v1/chat/completions}
    local code; code=$(post "$path" "$body")
    if [ "$code" != "$want" ]; then
        fail "${body:0:80}: HTTP $code, expected $want: $(cat "$TMP/body")"; return
    fi
    local got; got=$(json "sorted(j['error'].keys()), j['error']['param']" 2>&1)
    if [ "$got" != "['code', 'message', 'param', 'type'], $param" ]; then
        fail "${body:0:80}: error body $(cat "$TMP/body")"; return
    fi
    ok "HTTP $want for ${body:0:60}"
}
metric() { curl -s "$URL/metrics" | awk -v m="$1" '$1 == m { print $2 }'; }
# wait_metric NAME VALUE: polls /metrics until NAME equals VALUE (30 s)
wait_metric() {
    for _ in $(seq 1 300); do
        [ "$(metric "$1")" = "$2" ] && return 0
        sleep 0.1
    done
    return 1
}

# ---- 1: endpoints, SSE framing, stop strings, errors ----
start_server --parallel 2 --max-body 4096 --max-tokens 100
[ "$(curl -s "$URL/health")" = '{"status":"ok"}' ] && ok health || fail health
curl -s -o "$TMP/body" "$URL/v1/models"
[ "$(json "j['object'], j['data'][0]['object']")" = "list, model" ] &&
    ok models || fail "models: $(cat "$TMP/body")"

code=$(post /v1/completions '{"model":"anything","prompt":"Once upon a time","max_tokens":24,"temperature":0}')
greedy=$(json "j['choices'][0]['text']")
if [ "$code" = 200 ] &&
   [ "$(json "j['object'], j['model'], j['choices'][0]['finish_reason'], j['usage']['completion_tokens'], j['usage']['total_tokens'] == j['usage']['prompt_tokens'] + 24")" = "text_completion, anything, length, 24, True" ] &&
   [ -n "$greedy" ]; then
    ok "completion: $greedy"
else
    fail "completion: $code $(cat "$TMP/body")"
fi

# The same request streamed: framing, and the same text.
curl -s -N -H 'Content-Type: application/json' -D "$TMP/headers" \
     --data-binary '{"prompt":"Once upon a time","max_tokens":24,"temperature":0,"stream":true}' \
     "$URL/v1/completions" > "$TMP/sse"
python3 - "$TMP/sse" "$greedy" <<'PY' && ok "SSE framing and text" || fail "SSE framing"
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
assert raw.endswith("data: [DONE]\n\n"), repr(raw[-40:])
events = raw.split("\n\n")
assert events[-1] == "", "the stream ends with a blank line"
text, finish = "", None
for ev in events[:-2]:
    lines = ev.split("\n")
    assert len(lines) == 1, "one line per event: %r" % ev
    if lines[0].startswith(":"):
        continue
    assert lines[0].startswith("data: "), lines[0]
    j = json.loads(lines[0][6:])
    assert j["object"] == "text_completion", j
    c = j["choices"][0]
    text += c["text"]
    if c["finish_reason"]:
        finish = c["finish_reason"]
assert events[-2] == "data: [DONE]"
assert finish == "length", finish
assert text == sys.argv[2], (text, sys.argv[2])
PY
grep -qi '^content-type: text/event-stream' "$TMP/headers" &&
    ok "event-stream content type" || fail "content type: $(cat "$TMP/headers")"

# A stop string taken from the greedy text: the answer ends before it.
stop=$(python3 -c "import sys; t=sys.argv[1]; print(t[len(t)//2:len(t)//2+4])" "$greedy")
before=$(python3 -c "import sys; t=sys.argv[1]; print(t[:t.index(sys.argv[2])])" "$greedy" "$stop")
body=$(python3 -c "import json,sys; print(json.dumps({'prompt':'Once upon a time','max_tokens':24,'temperature':0,'stop':[sys.argv[1]]}))" "$stop")
code=$(post /v1/completions "$body")
if [ "$code" = 200 ] && [ "$(json "j['choices'][0]['text']")" = "$before" ] &&
   [ "$(json "j['choices'][0]['finish_reason']")" = stop ]; then
    ok "stop string '$stop'"
else
    fail "stop '$stop': expected '$before', got $(cat "$TMP/body")"
fi
# Streamed with the same stop: the same text.
body=$(python3 -c "import json,sys; print(json.dumps({'prompt':'Once upon a time','max_tokens':24,'temperature':0,'stop':sys.argv[1],'stream':True}))" "$stop")
got=$(curl -s -N --data-binary "$body" "$URL/v1/completions" | python3 -c "
import json, sys
t = ''
for l in sys.stdin:
    if l.startswith('data: {'):
        t += json.loads(l[6:])['choices'][0]['text']
print(t)")
[ "$got" = "$before" ] && ok "streamed stop string" ||
    fail "streamed stop: expected '$before', got '$got'"

# Chat, streamed: the first delta carries the role, the last the reason.
curl -s -N --data-binary '{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Tell a story"}],"max_tokens":8,"temperature":0,"stream":true}' \
     "$URL/v1/chat/completions" > "$TMP/sse"
python3 - "$TMP/sse" <<'PY' && ok "chat stream" || fail "chat stream: $(head -c 600 "$TMP/sse")"
import json, sys
evs = [l[6:] for l in open(sys.argv[1]) if l.startswith("data: ")]
assert evs[-1].strip() == "[DONE]"
js = [json.loads(e) for e in evs[:-1]]
assert all(j["object"] == "chat.completion.chunk" for j in js)
assert js[0]["choices"][0]["delta"]["role"] == "assistant"
assert js[-1]["choices"][0]["finish_reason"] in ("stop", "length")
assert js[-1]["usage"]["completion_tokens"] <= 8
PY

expect_error 400 None '{"messages": [}'
expect_error 400 None '[1,2]'
expect_error 400 temperature '{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}'
expect_error 400 temperature '{"messages":[{"role":"user","content":"x"}],"temperature":7}'
expect_error 400 max_tokens '{"messages":[{"role":"user","content":"x"}],"max_tokens":1.5}'
expect_error 400 max_tokens '{"messages":[{"role":"user","content":"x"}],"max_tokens":101}'
expect_error 400 n '{"messages":[{"role":"user","content":"x"}],"n":2}'
expect_error 400 stream '{"messages":[{"role":"user","content":"x"}],"stream":"yes"}'
expect_error 400 stop '{"messages":[{"role":"user","content":"x"}],"stop":[1]}'
expect_error 400 frobnicate '{"messages":[{"role":"user","content":"x"}],"frobnicate":1}'
expect_error 400 messages '{"messages":"hello"}'
expect_error 400 messages '{"messages":[{"role":"wizard","content":"x"}]}'
expect_error 400 prompt '{"prompt":42}' /v1/completions
long=$(python3 -c "print('Once upon a time there was a cat. ' * 150)")
expect_error 400 prompt "{\"prompt\":\"${long:0:2000}\"}" /v1/completions
[ "$(json "j['error']['code']")" = context_length_exceeded ] &&
    ok "context_length_exceeded" || fail "long prompt: $(cat "$TMP/body")"
expect_error 413 None "{\"prompt\":\"$long\"}" /v1/completions
expect_error 404 None '{}' /v1/nothing
# response_format: constrained decoding; every answer parses and fits.
schema='{"type":"object","properties":{"name":{"type":"string","maxLength":12},"n":{"type":"integer"},"mood":{"enum":["happy","sad"]}},"required":["name","n","mood"]}'
for seed in 1 2 3; do
    code=$(post /v1/chat/completions "{\"messages\":[{\"role\":\"user\",\"content\":\"Tell a story\"}],\"max_tokens\":90,\"temperature\":1,\"seed\":$seed,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"s\",\"strict\":true,\"schema\":$schema}}}")
    got=$(json "j['choices'][0]['finish_reason'], sorted(json.loads(j['choices'][0]['message']['content']).items())" 2>&1)
    if [ "$code" = 200 ] && python3 -c "
import json, sys
j = json.load(open('$TMP/body'))
c = j['choices'][0]
v = json.loads(c['message']['content'])
assert c['finish_reason'] == 'stop', c
assert set(v) == {'name', 'n', 'mood'} and type(v['n']) is int, v
assert isinstance(v['name'], str) and len(v['name']) <= 12 and v['mood'] in ('happy', 'sad'), v
"; then
        ok "response_format json_schema (seed $seed): $got"
    else
        fail "response_format json_schema: $code $(cat "$TMP/body")"
    fi
done
code=$(post /v1/chat/completions '{"messages":[{"role":"user","content":"Tell a story"}],"max_tokens":100,"temperature":0,"response_format":{"type":"json_object"}}')
# (a story model writes endless member names: a whole object or a cut one)
if [ "$code" = 200 ] && [ "$(json "(lambda c: c['message']['content'].startswith('{\"') and (c['finish_reason'] == 'length' or type(json.loads(c['message']['content'])) is dict))(j['choices'][0])")" = True ]; then
    ok "response_format json_object: $(json "j['choices'][0]['message']['content'][:60]")"
else
    fail "response_format json_object: $code $(cat "$TMP/body")"
fi
expect_error 400 response_format '{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"string","pattern":"a+"}}}}'
grep -q '\\"pattern\\" is not supported' "$TMP/body" && ok "the 400 names the keyword" ||
    fail "unsupported keyword message: $(cat "$TMP/body")"
expect_error 400 response_format '{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"xml"}}'
expect_error 400 response_format '{"messages":[{"role":"user","content":"x"}],"response_format":{"type":"json_schema"}}'
code=$(curl -s -o "$TMP/body" -w '%{http_code}' "$URL/v1/chat/completions")
[ "$code" = 405 ] && ok "405 for GET on a POST endpoint" || fail "GET chat: $code"
stop_server && ok "SIGTERM on an idle server: exit 0" || fail "exit status $?"

# --max-prompt-tokens above the context: the context still bounds prompts.
start_server --max-prompt-tokens 100000
expect_error 400 prompt "{\"prompt\":\"$long\"}" /v1/completions
[ "$(json "j['error']['code']")" = context_length_exceeded ] &&
    [ "$(curl -s "$URL/health")" = '{"status":"ok"}' ] &&
    ok "a prompt above the context is refused whatever --max-prompt-tokens" ||
    fail "--max-prompt-tokens 100000: $(cat "$TMP/body")"
stop_server || fail "exit status $? after a prompt above the context"

# ---- 2: the API key ----
start_server --api-key s3cret
code=$(post /v1/completions '{"prompt":"Hi","max_tokens":2}')
[ "$code" = 401 ] && [ "$(json "j['error']['type']")" = authentication_error ] &&
    ok "401 without a key" || fail "no key: $code $(cat "$TMP/body")"
code=$(post /v1/completions '{"prompt":"Hi","max_tokens":2}' -H 'Authorization: Bearer wrong')
[ "$code" = 401 ] && ok "401 with a wrong key" || fail "wrong key: $code"
code=$(post /v1/completions '{"prompt":"Hi","max_tokens":2}' -H 'Authorization: Bearer s3cret')
[ "$code" = 200 ] && ok "200 with the key" || fail "right key: $code $(cat "$TMP/body")"
code=$(curl -s -o /dev/null -w '%{http_code}' "$URL/metrics")
[ "$code" = 401 ] && ok "/metrics needs the key" || fail "metrics: $code"
[ "$(curl -s "$URL/health")" = '{"status":"ok"}' ] && ok "/health needs none" ||
    fail "health with a key"
stop_server

# SIGINT reaches a server that this script started in the background
# (bash starts it with SIGINT ignored): it exits 0.
start_server
kill -INT "$PID"
for _ in $(seq 1 100); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$PID" 2>/dev/null; then
    fail "SIGINT did not stop a background server"
else
    wait "$PID"; rc=$?
    [ "$rc" = 0 ] && ok "SIGINT: exit 0" || fail "SIGINT: exit $rc"
fi
PID=

# ---- 3: a full queue, a client that goes away, draining ----
# Each token waits 40 ms (a test hook) so requests overlap for sure.
export KESTREL_SERVE_TOKEN_DELAY_MS=40
start_server --parallel 1 --queue 1
long_req='{"prompt":"Once","max_tokens":100,"ignore_eos":true,"temperature":0,"stream":true}'
curl -s -N --data-binary "$long_req" "$URL/v1/completions" > "$TMP/a" &
CA=$!
wait_metric kestrel_slots_busy 1 || fail "the first request never ran"
curl -s -N --data-binary "$long_req" "$URL/v1/completions" > "$TMP/b" &
CB=$!
wait_metric kestrel_queue_depth 1 || fail "the second request never queued"
code=$(curl -s -o "$TMP/body" -D "$TMP/headers" -w '%{http_code}' \
       --data-binary '{"prompt":"Hi","max_tokens":2}' "$URL/v1/completions")
if [ "$code" = 503 ] && grep -qi '^retry-after:' "$TMP/headers" &&
   [ "$(json "j['error']['code']")" = server_busy ]; then
    ok "503 with Retry-After when the queue is full"
else
    fail "third request: $code $(cat "$TMP/body")"
fi
# Both clients go away: the running one mid-stream, the queued one early.
kill "$CA" "$CB"; wait "$CA" "$CB" 2>/dev/null
if wait_metric kestrel_slots_busy 0 && wait_metric kestrel_queue_depth 0; then
    gen=$(metric kestrel_completion_tokens_total)
    cancelled=$(metric kestrel_requests_cancelled_total)
    # Without cancellation the slot would run all 100 tokens of each.
    if [ "$cancelled" = 2 ] && [ "$gen" -lt 100 ]; then
        ok "clients gone: slot freed after $gen of 100 tokens, 2 cancelled"
    else
        fail "after the clients left: $gen tokens generated, $cancelled cancelled"
    fi
else
    fail "the slot stayed busy after its client went away"
fi
# A client of a request that does not stream hangs up after a second.
gen0=$(metric kestrel_completion_tokens_total)
curl -s --max-time 1 --data-binary '{"prompt":"Once","max_tokens":100,"ignore_eos":true,"temperature":0}' \
     "$URL/v1/completions" >/dev/null
if wait_metric kestrel_slots_busy 0; then
    gen=$(( $(metric kestrel_completion_tokens_total) - gen0 ))
    cancelled=$(metric kestrel_requests_cancelled_total)
    if [ "$cancelled" = 3 ] && [ "$gen" -lt 100 ]; then
        ok "a plain request's client gone: cancelled after $gen of 100 tokens"
    else
        fail "plain request's client gone: $gen tokens, $cancelled cancelled"
    fi
else
    fail "the slot stayed busy after a plain request's client went away"
fi
# SIGTERM while a request runs: it completes, then the server exits 0.
curl -s -N --data-binary '{"prompt":"Once","max_tokens":20,"ignore_eos":true,"temperature":0,"stream":true}' \
     "$URL/v1/completions" > "$TMP/a" &
CA=$!
wait_metric kestrel_slots_busy 1 || fail "the drained request never ran"
kill -TERM "$PID"
wait "$CA"
wait "$PID"; rc=$?; PID=
n=$(grep -c '^data: {' "$TMP/a")
if [ "$rc" = 0 ] && tail -c 15 "$TMP/a" | grep -q 'data: \[DONE\]' && [ "$n" -ge 20 ]; then
    ok "SIGTERM drained the running request ($n events), exit 0"
else
    fail "drain: exit $rc, stream: $(tail -c 300 "$TMP/a")"
fi
unset KESTREL_SERVE_TOKEN_DELAY_MS

[ "$fails" = 0 ] || { echo "$fails failure(s)"; cat "$TMP/server.log"; exit 1; }
echo "all passed"
