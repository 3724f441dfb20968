#!/usr/bin/env python3
"""Constrained generation end to end: for several schemas, many seeds at
temperature 1 on a synthetic model (random weights: the unconstrained
output would be noise), every output stops at end-of-generation, parses
with Python's json (strict UTF-8, no duplicate keys) and validates against
the schema with an independent checker of the subset.

    test_json_model.py JSON_GEN [MODEL.gguf]   (default: synth)

MODEL may be "shared:REL" (under $KESTREL_SHARED_DIR) or start with "~";
a missing model skips (77). KESTREL_JSON_SEEDS: seeds per schema (25)."""
import json
import os
import subprocess
import sys
import tempfile

SCHEMAS = [
    {"type": "object",
     "properties": {"name": {"type": "string", "maxLength": 8},
                    "age": {"type": "integer"},
                    "score": {"type": "number"},
                    "ok": {"type": "boolean"},
                    "color": {"enum": ["red", "green", "blue", 7, None]}},
     "required": ["name", "age", "color"]},
    {"type": "array", "items": {"type": "object",
                                "properties": {"x": {"type": "integer"},
                                               "tags": {"type": "array", "maxItems": 3,
                                                        "items": {"type": "string",
                                                                  "minLength": 1,
                                                                  "maxLength": 4}}},
                                "required": ["x", "tags"]},
     "minItems": 1, "maxItems": 3},
    {"type": "object",
     "properties": {"a": {"type": "object",
                          "properties": {"b": {"type": "object",
                                               "properties": {"c": {"const": "deep"},
                                                              "n": {"type": "null"}},
                                               "required": ["c", "n"]}},
                          "required": ["b"]}},
     "required": ["a"]},
    {"type": "number"},
]


def no_dupes(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate key in {keys}")
    return dict(pairs)


def same(a, b):
    return type(a) is type(b) and a == b or (
        type(a) in (int, float) and type(b) in (int, float) and a == b)


def valid(v, s, where="$"):
    """None when v satisfies schema s, else why not."""
    if "const" in s:
        return None if same(v, s["const"]) else f"{where}: {v!r} != const"
    if "enum" in s:
        return None if any(same(v, e) for e in s["enum"]) else f"{where}: {v!r} not in enum"
    t = s.get("type")
    if t is None:
        return None
    if t == "object":
        if not isinstance(v, dict):
            return f"{where}: not an object"
        props = s.get("properties", {})
        for k in s.get("required", []):
            if k not in v:
                return f"{where}: missing {k}"
        for k, x in v.items():
            if props and k not in props:
                return f"{where}: extra {k}"
            if k in props:
                why = valid(x, props[k], f"{where}.{k}")
                if why:
                    return why
        return None
    if t == "array":
        if not isinstance(v, list):
            return f"{where}: not an array"
        if len(v) < s.get("minItems", 0) or len(v) > s.get("maxItems", 1 << 30):
            return f"{where}: {len(v)} items"
        for i, x in enumerate(v):
            why = valid(x, s.get("items", {}), f"{where}[{i}]")
            if why:
                return why
        return None
    if t == "string":
        if not isinstance(v, str):
            return f"{where}: not a string"
        if len(v) < s.get("minLength", 0) or len(v) > s.get("maxLength", 1 << 30):
            return f"{where}: length {len(v)}"
        return None
    if t == "integer":
        return None if type(v) is int else f"{where}: not an integer"
    if t == "number":
        return None if type(v) in (int, float) else f"{where}: not a number"
    if t == "boolean":
        return None if type(v) is bool else f"{where}: not a boolean"
    if t == "null":
        return None if v is None else f"{where}: not null"
    return f"{where}: unknown type {t}"


def main():
    gen = sys.argv[1]
    model = sys.argv[2] if len(sys.argv) > 2 else "synth"
    if model.startswith("shared:"):
        model = os.path.join(os.environ.get("KESTREL_SHARED_DIR", "/work/shared"),
                             model[len("shared:"):])
    model = os.path.expanduser(model)
    if model != "synth" and not os.path.exists(model):
        print(f"skip: no model at {model}")
        return 77
    seeds = int(os.environ.get("KESTREL_JSON_SEEDS", "25"))
    failures = 0
    total = 0
    with tempfile.TemporaryDirectory() as d:
        for i, schema in enumerate(SCHEMAS):
            path = os.path.join(d, f"s{i}.json")
            with open(path, "w") as f:
                json.dump(schema, f)
            r = subprocess.run([gen, path, model, str(seeds), "1.0", "1500"],
                               capture_output=True)
            if r.returncode != 0:
                print(f"schema {i}: json_gen failed: {r.stderr.decode(errors='replace')}")
                return 1
            lines = r.stdout.split(b"\n")[:-1]
            if len(lines) != seeds:
                print(f"schema {i}: {len(lines)} outputs for {seeds} seeds")
                return 1
            distinct = set()
            for line in lines:
                total += 1
                stop, _, out = line.partition(b"\t")
                try:
                    text = out.decode("utf-8")
                    v = json.loads(text, object_pairs_hook=no_dupes)
                    why = valid(v, schema)
                except ValueError as e:
                    why = f"does not parse: {e}"
                if stop != b"eog":
                    why = f"stopped at {stop.decode()}, not end-of-generation"
                if why:
                    failures += 1
                    print(f"schema {i}: {out!r}: {why}")
                distinct.add(out)
            print(f"schema {i}: {len(lines)} outputs, {len(distinct)} distinct, "
                  f"e.g. {lines[0][4:84].decode(errors='replace')}")
            if len(distinct) < 2 and i != 2:
                print(f"schema {i}: temperature 1 gave one output for every seed")
                failures += 1
    print(f"{total} outputs, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
