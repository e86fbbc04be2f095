"""Whether this tree's compiled modules (`make compiled`, docs/compiled.md) were built from its sources.

Python imports a module's C extension before its .py: after an edit to a compiled module's source, the tests would
run the old code and pass or fail for reasons that are not in the file. scripts/compile.sh writes the hash of every
source it compiled; a tree whose extensions no longer match refuses to run tests."""

from __future__ import annotations

import hashlib
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

MANIFEST = Path(".tools/compiled/sources.sha256")


def extensions(root: Path) -> list[Path]:
    """The package's C extensions in this tree (none: the pure build)."""
    return sorted(p for p in (root / "fastdtm").rglob("*") if any(p.name.endswith(s) for s in EXTENSION_SUFFIXES))


def stale(root: Path) -> str | None:
    """Why the compiled modules cannot be trusted, or None (pure, or built from these very sources)."""
    built = extensions(root)
    if not built:
        return None
    manifest = root / MANIFEST
    if not manifest.is_file():
        return f"{len(built)} compiled modules but no {MANIFEST}"
    for line in manifest.read_text().splitlines():
        digest, _, name = line.partition("  ")
        source = root / name
        if not source.is_file() or hashlib.sha256(source.read_bytes()).hexdigest() != digest:
            return f"{name} changed since it was compiled"
    return None
