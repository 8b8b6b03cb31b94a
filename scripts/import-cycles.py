#!/usr/bin/env python3
"""Import circles inside each crate of the workspace: strongly connected
groups of modules (files) that reach each other through `crate::` paths
(test modules and comments aside). Run: python3 scripts/import-cycles.py"""
import os, re, sys

root = sys.argv[1] if len(sys.argv) > 1 else "."
crates = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in ("target", ".git", "fuzz") and not d.startswith("target")]
    if "Cargo.toml" in filenames and os.path.isdir(os.path.join(dirpath, "src")):
        crates.append(dirpath)

def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] in ("lib", "main", "mod"):
        rel = rel[:-1]
    return tuple(rel)

total = 0
for crate in sorted(crates):
    src = os.path.join(crate, "src")
    files = {}
    for d, _, fs in os.walk(src):
        for f in fs:
            if f.endswith(".rs"):
                p = os.path.join(d, f)
                files[module_of(src, p)] = p
    mods = set(files)
    def resolve(parts):
        best = None
        for i in range(len(parts), 0, -1):
            if tuple(parts[:i]) in mods:
                return tuple(parts[:i])
        return best
    graph = {m: set() for m in mods}
    for m, p in files.items():
        text = open(p, encoding="utf-8").read()
        # drop #[cfg(test)] mod tests { ... } blocks crudely: cut at the marker
        cut = re.search(r"#\[cfg\(test\)\]\s*(pub(\(crate\))? )?mod \w+ \{", text)
        if cut:
            text = text[:cut.start()]
        text = re.sub(r"//[^\n]*", "", text)
        for match in re.finditer(r"\bcrate::((?:\w+::)*\w+)", text):
            t = resolve(match.group(1).split("::"))
            if t and t != m and t != ():
                graph[m].add(t)
        # use crate::{a, b::c}
        for match in re.finditer(r"use crate::\{([^;]*)\};", text, re.S):
            for item in re.findall(r"(\w+)(?:::\w+)*", match.group(1)):
                t = resolve([item])
                if t and t != m and t != ():
                    graph[m].add(t)
    # Tarjan
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(10000)
    def strong(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1:
                sccs.append(comp)
    for v in sorted(graph):
        if v not in index:
            strong(v)
    for comp in sccs:
        total += 1
        names = sorted("::".join(c) or "<root>" for c in comp)
        print(f"{os.path.relpath(crate, root)}: {len(comp)} modules: {', '.join(names)}")
print(f"import circles: {total}")
