#!/usr/bin/env python3
"""Write a one-layer image FROM scratch as a docker-archive tar, the format `docker save` writes and
`ctr images import` reads, without a container engine.

Usage: image.py BINARY REF OUT.tar [GOARCH]

The layer holds BINARY as /<basename>, mode 0755, owned by root; the image runs it as its entrypoint,
as uid/gid 65535 (nobody needs to be root to wait for a signal). Everything is byte-for-byte
reproducible: fixed timestamps and owners, so the same binary gives the same image id.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile

EPOCH = "1970-01-01T00:00:00Z"


def _tar_bytes(members: list[tuple[str, bytes, int]]) -> bytes:
    """An uncompressed tar of (name, content, mode) with fixed owner and time."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, content, mode in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = mode
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


def build(binary: str, ref: str, out: str, goarch: str) -> str:
    """Write the archive; return the image id (the digest of its config)."""
    name = os.path.basename(binary)
    with open(binary, "rb") as f:
        layer = _tar_bytes([(name, f.read(), 0o755)])
    layer_hex = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": goarch,
        "os": "linux",
        "created": EPOCH,
        "config": {"Entrypoint": [f"/{name}"], "User": "65535:65535", "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_hex}"]},
        "history": [{"created": EPOCH, "created_by": f"scripts/k8s/pause: COPY {name} /"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_hex = hashlib.sha256(config_bytes).hexdigest()
    manifest = [{"Config": f"{config_hex}.json", "RepoTags": [ref], "Layers": [f"{layer_hex}/layer.tar"]}]
    archive = _tar_bytes(
        [
            (f"{layer_hex}/layer.tar", layer, 0o644),
            (f"{config_hex}.json", config_bytes, 0o644),
            ("manifest.json", json.dumps(manifest).encode(), 0o644),
        ]
    )
    tmp = f"{out}.tmp"
    with open(tmp, "wb") as f:
        f.write(archive)
    os.replace(tmp, out)
    return f"sha256:{config_hex}"


def main(argv: list[str]) -> int:
    if len(argv) not in (4, 5):
        print(__doc__, file=sys.stderr)
        return 2
    goarch = argv[4] if len(argv) == 5 else "amd64"
    print(build(argv[1], argv[2], argv[3], goarch))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
