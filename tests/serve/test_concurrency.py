#!/usr/bin/env python3
"""8 clients x 20 requests against `kestrel serve --parallel 2`, greedy,
few tokens: every response is complete (HTTP 200, a finish_reason, usage)
and equal to the same request served alone. Python's standard library
only. On stories260K (skips, 77, without it): its f32 arithmetic does not
depend on how tokens are batched, so a slot's reused prefix changes no
answer. Usage: test_concurrency.py KESTREL"""
import json
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

KESTREL = sys.argv[1]
MODEL = os.path.join(os.environ.get("KESTREL_SHARED_DIR", "/nonexistent"),
                     "models/stories260K/stories260K-f32.gguf")
if not os.access(MODEL, os.R_OK):
    print("SKIP: stories260K absent (%s); set KESTREL_SHARED_DIR" % MODEL)
    sys.exit(77)
p = subprocess.Popen([KESTREL, "serve", "-m", MODEL, "--port", "0",
                      "--backend", "cpu", "-t", "1", "-c", "512",
                      "--parallel", "2", "--queue", "8"],
                     stderr=subprocess.PIPE, text=True)
url = None
for line in p.stderr:
    m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    if m:
        url = m.group(1)
        threading.Thread(target=p.stderr.read, daemon=True).start()
        break
if not url:
    sys.exit("FAIL: the server did not start")

words = ["Lily", "Tom", "a bear", "the sun", "a boat"]
reqs = []
for c in range(8):
    for k in range(20):
        if k % 2:
            reqs.append(("/v1/completions",
                         {"prompt": "Once upon a time, %s" % words[(c + k) % 5],
                          "max_tokens": 6, "temperature": 0}))
        else:
            reqs.append(("/v1/chat/completions",
                         {"messages": [{"role": "user", "content":
                                        "Story %d about %s" % (k % 4, words[c % 5])}],
                          "max_tokens": 6, "temperature": 0}))


def serve(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        d = json.load(r)
    ch = d["choices"][0]
    assert ch["finish_reason"] in ("stop", "length"), d
    assert d["usage"]["completion_tokens"] >= 1, d
    return ch["message"]["content"] if "message" in ch else ch["text"]


fails = []
try:
    alone = {}
    for path, body in reqs:
        key = json.dumps([path, body])
        if key not in alone:
            alone[key] = serve(path, body)
    got = [None] * len(reqs)

    def client(c):
        for k in range(20):
            i = c * 20 + k
            try:
                got[i] = serve(*reqs[i])
            except Exception as e:   # noqa: BLE001 - reported below
                fails.append("request %d: %r" % (i, e))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    diff = [i for i, (path, body) in enumerate(reqs)
            if got[i] is not None and got[i] != alone[json.dumps([path, body])]]
    if diff:
        i = diff[0]
        fails.append("%d of 160 differ from the request served alone, e.g. "
                     "%r vs %r" % (len(diff), got[i],
                                   alone[json.dumps(list(reqs[i]))]))
finally:
    p.terminate()
    p.wait(30)
if fails:
    print("FAIL:", "\n".join(fails[:5]))
    sys.exit(1)
print("ok: 8 clients x 20 requests, --parallel 2: all complete, all equal "
      "to the same request served alone")
