#!/usr/bin/env python3
"""Checks the public API's surface against the headers.

1. libkestrel.so exports exactly the functions declared KS_API in
   include/kestrel/*.h: nothing internal leaks, nothing declared is missing
   (nm -D --defined-only on the built library).
2. tests/api/test_api.c has a NULL-argument probe for every declared
   function and each of its pointer arguments, and no probe for a function
   or argument that no longer exists.

Exit 0 when all holds, 1 with one line per finding otherwise, 77 (skip)
when nm is missing."""
import argparse
import os
import re
import shutil
import subprocess
import sys


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", " ", text)


def declared(headers):
    """{function: [pointer argument names]} for every KS_API function."""
    decl = {}
    pat = re.compile(r"\bKS_API\b([^;{}()]*?)\b(ks_\w+)\s*\(([^)]*)\)\s*;")
    for name in sorted(os.listdir(headers)):
        if not name.endswith(".h"):
            continue
        with open(os.path.join(headers, name), encoding="utf-8") as f:
            text = strip_comments(f.read())
        for m in pat.finditer(text):
            ptrs = []
            for param in m.group(3).split(","):
                param = param.strip()
                if not param or param == "void" or "*" not in param:
                    continue
                arg = re.search(r"(\w+)\s*(\[\s*\])?$", param)
                ptrs.append(arg.group(1))
            decl[m.group(2)] = ptrs
    return decl


def exported(lib, nm):
    out = subprocess.run([nm, "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            syms.add(parts[2].split("@")[0])
    return syms


def probes(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return re.findall(r'PROBE\("(\w+)",\s*"([^"]+)"', text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lib", required=True, help="the built libkestrel.so")
    ap.add_argument("--headers", required=True, help="include/kestrel")
    ap.add_argument("--probes", required=True, help="tests/api/test_api.c")
    a = ap.parse_args()

    nm = shutil.which("nm")
    if not nm:
        print("check_api: nm not found; skipping")
        return 77
    decl = declared(a.headers)
    if not decl:
        print(f"check_api: no KS_API declarations found in {a.headers}")
        return 1
    errors = []

    syms = exported(a.lib, nm)
    for s in sorted(syms - set(decl)):
        errors.append(f"{a.lib} exports '{s}', which no header in "
                      f"{a.headers} declares KS_API")
    for s in sorted(set(decl) - syms):
        errors.append(f"'{s}' is declared KS_API but {a.lib} does not "
                      f"export it")

    table = probes(a.probes)
    have = {}
    for fn, arg in table:
        have.setdefault(fn, set()).add(arg)
        if fn not in decl:
            errors.append(f"{a.probes}: probe for '{fn}', which no header "
                          f"declares")
            continue
        base = re.match(r"\w+", arg)
        if arg not in ("-", "optional") and (not base or
                                             base.group(0) not in decl[fn]):
            errors.append(f"{a.probes}: probe of {fn}'s argument '{arg}', "
                          f"which is not one of its pointer arguments "
                          f"{decl[fn]}")
    for fn, ptrs in sorted(decl.items()):
        args = have.get(fn, set())
        if not ptrs and "-" not in args:
            errors.append(f"{a.probes}: no probe for {fn} (it takes no "
                          f"pointer: add PROBE(\"{fn}\", \"-\", ...))")
        for p in ptrs:
            if p not in args:
                errors.append(f"{a.probes}: no probe of {fn} with '{p}' NULL")

    for e in errors:
        print(e)
    print(f"check_api: {len(decl)} functions declared, {len(syms)} symbols "
          f"exported, {len(table)} probes, {len(errors)} problems")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
