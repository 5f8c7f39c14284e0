#!/usr/bin/env python3
"""Checks the locked dependencies, offline: their licences and their minimum Rust versions.

    scripts/check-deps.py            # both checks; exit 1 on a problem

- Licences: every package linked on Linux (normal, build and dev dependencies of the
  workspace) must have an SPDX licence expression that the allowed licences below satisfy
  (`A OR B` needs one of them, `A AND B` both). A package without one fails the check.
- Rust version: the workspace's `rust-version` must be at least every dependency's
  `rust-version`, so that the version we state is one the locked dependencies build with.

Reads `cargo metadata --locked` (the registry's cached manifests; no network once the
dependencies were fetched, as after a build).
"""

import json
import re
import subprocess
import sys

# Permissive licences, and MPL-2.0 (file-level copyleft: fine for a dependency we do not
# modify). Nothing here obliges personaflow's own code to change its Apache-2.0 licence.
ALLOWED = {
    "Apache-2.0",
    "Apache-2.0 WITH LLVM-exception",
    "MIT",
    "MIT-0",
    "BSD-2-Clause",
    "BSD-3-Clause",
    "ISC",
    "Zlib",
    "0BSD",
    "BSL-1.0",
    "CC0-1.0",
    "Unlicense",
    "Unicode-3.0",
    "Unicode-DFS-2016",
    "MPL-2.0",
    "CDLA-Permissive-2.0",
}

PLATFORM = "x86_64-unknown-linux-gnu"


def metadata():
    out = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked", "--filter-platform", PLATFORM],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def tokens(expr: str):
    # `WITH` exceptions stay attached to their licence.
    expr = expr.replace("/", " OR ")  # old crates write `MIT/Apache-2.0`
    return re.findall(r"\(|\)|[A-Za-z0-9.+\-]+(?:\s+WITH\s+[A-Za-z0-9.+\-]+)?", expr)


def satisfied(expr: str) -> bool:
    """Whether the allowed licences satisfy an SPDX expression (OR binds looser than AND)."""
    toks = tokens(expr)
    pos = 0

    def parse_or():
        nonlocal pos
        ok = parse_and()
        while pos < len(toks) and toks[pos] == "OR":
            pos += 1
            ok = parse_and() or ok
        return ok

    def parse_and():
        nonlocal pos
        ok = parse_atom()
        while pos < len(toks) and toks[pos] == "AND":
            pos += 1
            ok = parse_atom() and ok
        return ok

    def parse_atom():
        nonlocal pos
        tok = toks[pos]
        pos += 1
        if tok == "(":
            ok = parse_or()
            pos += 1  # ")"
            return ok
        return re.sub(r"\s+", " ", tok).removesuffix("+") in ALLOWED

    result = parse_or()
    return result and pos == len(toks)


def version(text):
    return tuple(int(p) for p in text.split("."))


def main() -> int:
    meta = metadata()
    members = set(meta["workspace_members"])
    linked = {node["id"] for node in meta["resolve"]["nodes"]}
    packages = {p["id"]: p for p in meta["packages"] if p["id"] in linked}
    problems = []

    declared = {packages[m]["rust_version"] for m in members}
    if len(declared) != 1 or None in declared:
        problems.append(f"the workspace members state different rust-versions: {declared}")
    ours = version(sorted(declared - {None})[0]) if declared - {None} else (0,)
    needs = []
    for pid, p in packages.items():
        if pid in members:
            continue
        lic = p.get("license")
        if not lic:
            problems.append(f"{p['name']} {p['version']}: no SPDX licence expression")
        elif not satisfied(lic):
            problems.append(f"{p['name']} {p['version']}: licence {lic!r} is not allowed")
        if p.get("rust_version"):
            needs.append((version(p["rust_version"]), p["name"], p["version"]))
    needs.sort(reverse=True)
    if needs and needs[0][0] > ours:
        for v, name, ver in needs:
            if v > ours:
                problems.append(
                    f"{name} {ver} needs Rust {'.'.join(map(str, v))}, above the workspace's "
                    f"rust-version {'.'.join(map(str, ours))}"
                )
    licences = sorted({p.get("license") or "?" for pid, p in packages.items() if pid not in members})
    print(f"{len(packages) - len(members)} dependencies; licences: {'; '.join(licences)}")
    if needs:
        v, name, ver = needs[0]
        print(
            f"rust-version {'.'.join(map(str, ours))}; the highest a dependency states: "
            f"{'.'.join(map(str, v))} ({name} {ver})"
        )
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
