"""The pure layer stays pure: the request models check URLs and headers by the syntax modules alone, so importing
them loads no client, no socket code and no gRPC (issue 21)."""

from __future__ import annotations

import subprocess
import sys

IO_MODULES = ("fastdtm.branch_http", "fastdtm.branch_grpc", "fastdtm.store", "grpc", "httptools", "uvloop")


def test_the_request_models_import_no_io_module() -> None:
    probe = f"import sys, fastdtm.models; print(sorted(m for m in sys.modules if m.startswith({IO_MODULES!r})))"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]", loaded
