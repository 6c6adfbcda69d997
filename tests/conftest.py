"""Shared by unit and integration tests."""

from __future__ import annotations

import os
import tempfile

# The memo of compressed layers (shipit.memo) goes to a throwaway place, not the home of
# whoever runs the tests; removed with the process's temp dir.
os.environ.setdefault("SHIPIT_CACHE_DIR", tempfile.mkdtemp(prefix="shipit-test-cache-"))
