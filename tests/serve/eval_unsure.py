#!/usr/bin/env python3
"""How well the confidence rule (kestrel serve --fallback-when-unsure)
predicts wrong answers: a measurement, not a CI test.

Usage: eval_unsure.py KESTREL [MODEL] [--tokens 4,8,16] [--qa FILE]

For each N in --tokens, starts `kestrel serve` on MODEL (default SmolLM2
from ~/.cache/kestrel/models) with --unsure-tokens N, asks every question
of tests/data/factual_qa.tsv as a chat, greedy, and reads the answer and
kestrel.entropy (the mean entropy of its first N tokens). An answer is
right when one of the accepted answers appears in it as a whole word. It
prints each answer, then per N the ROC AUC of entropy as a predictor of a
wrong answer, and precision/recall of "routed to the fallback" (entropy
above T) for wrong answers at several thresholds T. Standard library
only."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))


def load_qa(path):
    qa = []
    for line in open(path, encoding="utf-8"):
        if line.startswith("#") or not line.strip():
            continue
        q, a = line.rstrip("\n").split("\t")
        qa.append((q, a.split("|")))
    return qa


def right(answer, accepted):
    return any(re.search(r"(?<!\w)" + re.escape(a) + r"(?!\w|\.\d)", answer,
                         re.IGNORECASE) for a in accepted)


def serve(kestrel, model, n_tokens):
    p = subprocess.Popen([kestrel, "serve", "-m", model, "--port", "0",
                          "-c", "512", "--unsure-tokens", str(n_tokens)],
                         stderr=subprocess.PIPE, text=True)
    for line in p.stderr:
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            return p, m.group(1)
    raise SystemExit("kestrel serve did not start")


def ask(url, question):
    body = json.dumps({
        "messages": [
            {"role": "system", "content": "Answer in a few words."},
            {"role": "user", "content": question}],
        "temperature": 0, "max_tokens": 24}).encode()
    req = urllib.request.Request(url + "/v1/chat/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    d = json.load(urllib.request.urlopen(req, timeout=300))
    return d["choices"][0]["message"]["content"], d["kestrel"]["entropy"]


def auc(pos, neg):
    """P(a wrong answer's entropy > a right one's), ties half."""
    if not pos or not neg:
        return float("nan")
    s = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return s / (len(pos) * len(neg))


def main():
    args = sys.argv[1:]
    tokens, qa_path = [4, 8, 16], os.path.join(HERE, "..", "data",
                                                "factual_qa.tsv")
    if "--tokens" in args:
        i = args.index("--tokens")
        tokens = [int(x) for x in args[i + 1].split(",")]
        del args[i:i + 2]
    if "--qa" in args:
        i = args.index("--qa")
        qa_path = args[i + 1]
        del args[i:i + 2]
    kestrel = args[0]
    model = args[1] if len(args) > 1 else os.path.expanduser(
        "~/.cache/kestrel/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    qa = load_qa(qa_path)
    print("model: %s, %d questions" % (os.path.basename(model), len(qa)))
    for n in tokens:
        p, url = serve(kestrel, model, n)
        rows = []
        t0 = time.time()
        try:
            for q, acc in qa:
                a, h = ask(url, q)
                rows.append((right(a, acc), h, q, a))
        finally:
            p.terminate()
            p.wait()
        if n == tokens[0]:
            for ok, h, q, a in rows:
                print("%s %.3f %s -> %s" % ("right" if ok else "WRONG", h, q,
                                            a.replace("\n", " ")[:70]))
        wrong = [h for ok, h, _, _ in rows if not ok]
        good = [h for ok, h, _, _ in rows if ok]
        print("\nN=%d: %d right, %d wrong (%.0f s); AUC of entropy for a "
              "wrong answer: %.3f" % (n, len(good), len(wrong),
                                      time.time() - t0, auc(wrong, good)))
        print("  T (nats)  routed  precision  recall  (of wrong answers)")
        hs = sorted(h for _, h, _, _ in rows)
        cuts = sorted(set([round(hs[int(len(hs) * f)], 3)
                           for f in (0.2, 0.4, 0.5, 0.6, 0.8)] +
                          [0.5, 1.0, 1.5, 2.0]))
        for t in cuts:
            routed = [ok for ok, h, _, _ in rows if h > t]
            tp = sum(1 for ok in routed if not ok)
            prec = tp / len(routed) if routed else float("nan")
            rec = tp / len(wrong) if wrong else float("nan")
            print("  %8.3f  %6d  %9.2f  %6.2f" % (t, len(routed), prec, rec))


if __name__ == "__main__":
    main()
