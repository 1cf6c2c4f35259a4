"""Import circles between the modules of a Rust crate's src/ (one module per file).

An edge A -> B means a non-test line of A names B: `use crate::b::...`, `crate::b::...` in code,
or `super::...`. A module's uses of its own children are not edges (a folder's mod.rs is its
entry point and composes them); everything else is: child to parent, sibling to sibling, and
across folders. Prints every circle (strongly connected component of more than one module) and
exits 1 if there is one.

Usage: python3 scripts/lib/module_cycles.py [SRC_DIR]
"""

import re
import sys
from pathlib import Path


def module_of(path: Path, src: Path) -> tuple:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def code_lines(text: str):
    """Lines outside `#[cfg(test)]` modules and comments."""
    skip_depth = None
    depth = 0
    pending_test = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("//"):
            continue
        if stripped.startswith("#[cfg(test)]"):
            pending_test = True
            continue
        opens, closes = line.count("{"), line.count("}")
        if pending_test and skip_depth is None and opens:
            skip_depth = depth
        pending_test = False if opens or stripped.endswith(";") else pending_test
        depth += opens - closes
        if skip_depth is not None:
            if depth <= skip_depth:
                skip_depth = None
            continue
        yield line


def resolve(path_parts, modules):
    """The longest prefix of path_parts that is a module."""
    for n in range(len(path_parts), 0, -1):
        if tuple(path_parts[:n]) in modules:
            return tuple(path_parts[:n])
    return None


def edges_of(mod, text, modules):
    out = set()
    for line in code_lines(text):
        for m in re.finditer(r"\bcrate((?:::\w+)+)", line):
            target = resolve(m.group(1).strip(":").split("::"), modules)
            if target is not None:
                out.add(target)
        for m in re.finditer(r"\b((?:super::)+)((?:\w+::)*\w+)", line):
            ups = m.group(1).count("super::")
            base = list(mod[: len(mod) - ups]) if ups <= len(mod) else []
            target = resolve(base + m.group(2).split("::"), modules) or tuple(base)
            out.add(target)
        # `use a::{b, c}` after `use super::` is covered by the prefix; grouped crate paths:
        for m in re.finditer(r"\bcrate::\{([^}]*)\}", line):
            for item in m.group(1).split(","):
                target = resolve(item.strip().split("::"), modules)
                if target is not None:
                    out.add(target)
    out.discard(mod)
    # A module's own children are its parts, not its dependencies.
    return {t for t in out if not (len(t) == len(mod) + 1 and t[: len(mod)] == mod)}


def circles(graph):
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            visit(v)
    return found


def main():
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src")
    files = {module_of(p, src): p for p in src.rglob("*.rs") if p.name != "tests.rs"}
    modules = set(files)
    graph = {m: edges_of(m, p.read_text(), modules) for m, p in files.items()}
    found = circles(graph)
    name = lambda m: "::".join(m) or "crate"
    for comp in found:
        members = set(comp)
        links = [
            f"{name(a)} -> {name(b)}" for a in comp for b in sorted(graph[a]) if b in members
        ]
        print("import circle: " + ", ".join(links))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
