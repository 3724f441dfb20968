"""Load test for a running `kestrel serve` (or any OpenAI-compatible
server): C concurrent clients, each R streamed greedy chat requests.
Prints aggregate generated tokens/s and p50/p99 time to first token.
Not run by meson test (timings). Usage:
  bench_serve.py BASE_URL [CLIENTS] [REQUESTS] [MAX_TOKENS]"""
import statistics
import sys
import threading
import time

import openai

base = sys.argv[1]
clients = int(sys.argv[2]) if len(sys.argv) > 2 else 8
reqs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
max_tokens = int(sys.argv[4]) if len(sys.argv) > 4 else 64
ttft, tokens, errors = [], [0], []
lock = threading.Lock()


def run(c):
    cl = openai.OpenAI(base_url=base, api_key="unused", max_retries=0,
                       timeout=600)
    for k in range(reqs):
        t0 = time.time()
        first = None
        try:
            for ch in cl.chat.completions.create(
                    model="m", temperature=0, max_tokens=max_tokens,
                    stream=True, stream_options={"include_usage": True},
                    messages=[{"role": "user", "content":
                               "Write a short story number %d about a %s." %
                               (k, ["cat", "dog", "ship", "tree"][c % 4])}]):
                if first is None and ch.choices and ch.choices[0].delta.content:
                    first = time.time() - t0
                if ch.usage:
                    with lock:
                        tokens[0] += ch.usage.completion_tokens
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))
        if first is not None:
            with lock:
                ttft.append(first)


t0 = time.time()
ts = [threading.Thread(target=run, args=(c,)) for c in range(clients)]
for t in ts:
    t.start()
for t in ts:
    t.join()
dt = time.time() - t0
ttft.sort()
p99 = ttft[min(len(ttft) - 1, int(round(0.99 * (len(ttft) - 1))))]
print("%d clients x %d requests: %d tokens in %.1f s = %.1f tokens/s; "
      "TTFT p50 %.2f s, p99 %.2f s; %d errors" %
      (clients, reqs, tokens[0], dt, tokens[0] / dt, statistics.median(ttft),
       p99, len(errors)))
