"""`python -m fastdtm` = the `fastdtm` command."""

from __future__ import annotations

import sys

from fastdtm.cli import main

sys.exit(main())
