"""What the browser tests share: Debian's Chromium driven by Playwright, and where screenshots go
(the `browser` fixture itself is in conftest.py).

Importing this module skips the importing test module when Chromium or Playwright is missing.
Playwright never downloads a browser here: it launches /usr/bin/chromium (`make test` installs it).
"""
import os
import tempfile
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
# Screenshots go to a scratch folder, so a test run leaves the checkout clean; to refresh the
# README's: SCREENSHOTS_DIR=docs/screenshots make test
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS_DIR") or Path(tempfile.gettempdir()) / "referrals-screenshots")

if not Path(CHROMIUM).exists():
    pytest.skip(reason=f"needs Debian's Chromium at {CHROMIUM} (apt-get install chromium; CI installs it)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (requirements-dev.txt)")

