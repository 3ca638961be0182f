#!/usr/bin/env python3
"""Prints the dependency graph between the crate's top-level modules (from `crate::X`
paths in src/) and any cycles in it. Exit 1 when a cycle exists.

Usage: scripts/module-graph.py [--dot]

A top-level module is `src/X.rs` or `src/X/`; `src/main.rs` and `src/lib.rs` are left out.
Only paths outside comments count; `#[cfg(test)]` blocks at the end of a file are ignored
(tests may reach anywhere).
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
PATH = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
# `use crate::{a, b::c}` groups.
GROUP = re.compile(r"\bcrate::\{([^}]*)\}", re.S)


def module_of(rel):
    head = rel.split(os.sep)[0]
    return head[:-3] if head.endswith(".rs") else head


def strip(text):
    text = text.split("#[cfg(test)]")[0]
    lines = []
    for line in text.splitlines():
        code = line.split("//")[0]
        lines.append(code)
    return "\n".join(lines)


def graph():
    edges = {}
    for base, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(base, f), ROOT)
            if rel in ("main.rs", "lib.rs"):
                continue
            mod = module_of(rel)
            with open(os.path.join(base, f), encoding="utf-8") as fh:
                text = strip(fh.read())
            targets = set(PATH.findall(text))
            for group in GROUP.findall(text):
                for item in group.split(","):
                    name = item.strip().split("::")[0].strip()
                    if name:
                        targets.add(name)
            edges.setdefault(mod, set()).update(t for t in targets if t != mod)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    edges = graph()
    if "--dot" in sys.argv:
        print("digraph modules {")
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f'  "{a}" -> "{b}";')
        print("}")
    else:
        for a in sorted(edges):
            print(f"{a:<12} -> {', '.join(sorted(edges[a])) or '-'}")
    found = cycles(edges)
    for c in found:
        print("cycle: " + " <-> ".join(c), file=sys.stderr)
    if not found:
        print("no cycles", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
