"""kestrel serve driven by the real openai client (loopback only).

Chat and text completions, streaming and not; errors as the client raises
them; 8 clients x 5 greedy requests against --parallel 2, each answer equal
to the same request served alone.
Usage: test_openai.py KESTREL_BINARY MODEL"""
import re
import subprocess
import sys
import threading
import time
import urllib.request

import openai

KESTREL, MODEL = sys.argv[1], sys.argv[2]
KEY = "test-key"
failures = []


def check(cond, what):
    print(("ok: " if cond else "FAIL: ") + what, flush=True)
    if not cond:
        failures.append(what)


def start(*args):
    # on the CPU: the HTTP side is under test (and the Vulkan driver
    # leaks under LeakSanitizer)
    p = subprocess.Popen([KESTREL, "serve", "-m", MODEL, "--port", "0",
                          "--backend", "cpu", "--api-key", KEY, *args],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
        if m:
            # keep draining stderr so the server never blocks on it
            threading.Thread(target=p.stderr.read, daemon=True).start()
            return p, openai.OpenAI(
                base_url="http://127.0.0.1:%s/v1" % m.group(1), api_key=KEY,
                max_retries=0, timeout=120)
    sys.exit("FAIL: the server did not start")


def stop(p):
    p.terminate()
    return p.wait(timeout=60)


def chat(client, messages, stream, max_tokens=24):
    if not stream:
        r = client.chat.completions.create(
            model="whatever", messages=messages, max_tokens=max_tokens,
            temperature=0)
        return r.choices[0].message.content, r
    text, last = "", None
    for chunk in client.chat.completions.create(
            model="whatever", messages=messages, max_tokens=max_tokens,
            temperature=0, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        last = chunk
    return text, last


def complete(client, prompt, stream, max_tokens=24):
    if not stream:
        r = client.completions.create(model="m", prompt=prompt,
                                      max_tokens=max_tokens, temperature=0)
        return r.choices[0].text
    return "".join(c.choices[0].text for c in client.completions.create(
        model="m", prompt=prompt, max_tokens=max_tokens, temperature=0,
        stream=True) if c.choices)


# ---- the API, one request at a time ----
server, client = start("--parallel", "2", "--max-tokens", "64")
models = client.models.list()
check(len(models.data) == 1 and models.data[0].object == "model",
      "models.list: %s" % [m.id for m in models.data])
msgs = [{"role": "system", "content": "You tell stories."},
        {"role": "user", "content": "Tell me about a cat."}]
text, r = chat(client, msgs, False)
check(r.object == "chat.completion" and r.choices[0].message.role ==
      "assistant" and r.choices[0].finish_reason in ("stop", "length") and
      r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
      and len(text) > 0, "chat: %r, usage %s" % (text, r.usage))
stext, last = chat(client, msgs, True)
check(stext == text, "streamed chat equals the plain answer: %r" % stext)
check(last.choices[0].finish_reason == r.choices[0].finish_reason,
      "streamed finish_reason %s" % last.choices[0].finish_reason)
ctext = complete(client, "Once upon a time", False)
check(len(ctext) > 0 and complete(client, "Once upon a time", True) == ctext,
      "completions, plain and streamed: %r" % ctext)
r = client.chat.completions.create(model="x", messages=msgs, max_tokens=32,
                                   temperature=0, stop=["."])
check("." not in r.choices[0].message.content and
      r.choices[0].finish_reason in ("stop", "length"),
      "stop ['.']: %r" % r.choices[0].message.content)
# seed: the same seed samples the same answer at temperature 1
sampled = [client.chat.completions.create(
    model="x", messages=msgs, max_tokens=24, temperature=1.0, seed=s)
    .choices[0].message.content for s in (42, 42, 7, 8, 9)]
check(sampled[0] == sampled[1] and len(set(sampled)) > 1,
      "seed 42 twice gives one answer, other seeds others: %r" % sampled[:3])
# stream_options.include_usage: a last chunk with usage and no choices
chunks = list(client.chat.completions.create(
    model="x", messages=msgs, max_tokens=8, temperature=0, stream=True,
    stream_options={"include_usage": True}))
check(chunks[-1].choices == [] and chunks[-1].usage is not None and
      chunks[-1].usage.completion_tokens == 8 and
      all(c.usage is None for c in chunks[:-1]),
      "include_usage: usage %s in the last chunk only" % chunks[-1].usage)
try:
    client.chat.completions.create(model="x", messages=msgs, n=2)
    check(False, "n=2 was accepted")
except openai.BadRequestError as e:
    check(e.status_code == 400 and e.body.get("param") == "n",
          "n=2: BadRequestError %s" % e.body)
try:
    client.chat.completions.create(model="x", messages=msgs, max_tokens=65)
    check(False, "max_tokens above --max-tokens was accepted")
except openai.BadRequestError as e:
    check(e.body.get("param") == "max_tokens", "max_tokens 65: %s" % e.body)
try:
    openai.OpenAI(base_url=str(client.base_url), api_key="wrong",
                  max_retries=0).models.list()
    check(False, "a wrong key was accepted")
except openai.AuthenticationError as e:
    check(e.status_code == 401, "wrong key: AuthenticationError")

# ---- concurrency: 8 clients x 5 requests, --parallel 2 ----
# Requests share prefixes (a conversation that grows, one system message)
# so that slots reuse their KV cache between unrelated clients.
reqs = []
for c in range(8):
    for k in range(5):
        kind = (c + k) % 3
        if kind == 0:
            reqs.append(("chat", [
                {"role": "system", "content": "You tell stories."},
                {"role": "user", "content": "Story %d about a %s." %
                 (k, ["dog", "cat", "bird", "fish"][c % 4])}]))
        elif kind == 1:
            conv = [{"role": "user", "content": "Hello %d" % (c % 2)}]
            for t in range(k):
                conv += [{"role": "assistant", "content": "Hi there %d" % t},
                         {"role": "user", "content": "More %d" % t}]
            reqs.append(("chat", conv))
        else:
            reqs.append(("text", "Once upon a time, %s" %
                         ["Lily", "Tom", "a bear", "the sun"][(c + k) % 4]))


def serve_one(cl, req, stream):
    if req[0] == "chat":
        return chat(cl, req[1], stream)[0]
    return complete(cl, req[1], stream)


alone = [serve_one(client, r, False) for r in reqs]
got = [None] * len(reqs)
errors = []


def client_thread(c):
    cl = openai.OpenAI(base_url=str(client.base_url), api_key=KEY,
                       max_retries=0, timeout=120)
    for k in range(5):
        i = c * 5 + k
        try:
            got[i] = serve_one(cl, reqs[i], stream=(c + k) % 2 == 0)
        except Exception as e:   # noqa: BLE001 - reported below
            errors.append("%d: %r" % (i, e))


t0 = time.time()
threads = [threading.Thread(target=client_thread, args=(c,))
           for c in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
dt = time.time() - t0
check(not errors, "concurrent requests without errors: %s" % errors[:3])
diff = [i for i in range(len(reqs)) if got[i] != alone[i]]
msg = ("8 clients x 5 requests equal the answers served alone "
       "(%d differ: %s)" % (len(diff), [(got[i], alone[i]) for i in diff[:2]]))
if "stories260K" in MODEL:
    check(not diff, msg)
else:
    # Known: on SmolLM2's Q4_1 the CPU kernels' arithmetic depends on how
    # the tokens are batched, so a prompt whose prefix a slot reused can
    # decode differently from one prefilled whole. Exact on stories260K.
    check(all(g is not None for g in got), "every concurrent request answered")
    print("note (not checked on this model): " + msg)
print("40 concurrent requests in %.2f s" % dt)
req = urllib.request.Request(str(client.base_url).replace("/v1/", "/metrics"),
                             headers={"Authorization": "Bearer " + KEY})
metrics = dict(l.split() for l in urllib.request.urlopen(req).read().decode()
               .splitlines() if l and not l.startswith("#"))
check(float(metrics["kestrel_prompt_tokens_cached_total"]) > 0,
      "slots reused prompt prefixes: %s of %s prompt tokens" %
      (metrics["kestrel_prompt_tokens_cached_total"],
       metrics["kestrel_prompt_tokens_total"]))
check(stop(server) == 0, "SIGTERM: exit 0")

if failures:
    print("%d failure(s)" % len(failures))
    sys.exit(1)
print("all passed")
