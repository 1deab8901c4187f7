"""The browser the browser tests drive: Debian's ``chromium`` through Playwright for Python.

Importing this module from a test module skips that whole module, with the reason, where
either part is absent (``.ci/system-packages`` installs chromium, the ``browser`` extra
installs playwright), so CI runs the tests and a bare machine says what is missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is absent (Debian package 'chromium'; .ci/system-packages "
                "installs it)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="playwright is not installed (pip install -e '.[browser]')")


def launch(p, *args: str):
    """Chromium launched from ``p`` (a running ``sync_playwright()``) with extra ``args``."""
    return p.chromium.launch(executable_path=CHROMIUM, args=list(args))
