"""Refresh the dashboard's screenshots that the documentation shows.

    python tools/screenshots.py docs

runs the browser tests (tests/test_dashboard_browser.py), which then keep
the pages they check as PNG files in that folder instead of a temporary
one: the pictures are of pages the tests have just checked. It needs
Playwright (``pip install playwright``) and Chromium (``apt-get install
chromium``); the test suite itself never writes to the checkout.
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"  # Debian's, as tests/services.py looks for it


def main(argv: list) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    folder = os.path.abspath(argv[0])
    if not os.path.isdir(folder):
        print(f"screenshots: no folder {folder}", file=sys.stderr)
        return 1
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("screenshots: Playwright is not installed: pip install playwright",
              file=sys.stderr)
        return 1
    if shutil.which("chromium") is None and not os.path.exists(CHROMIUM):
        print("screenshots: no chromium browser: apt-get install -y chromium", file=sys.stderr)
        return 1
    # PYSCHED_REQUIRE_SERVICES: a browser test that cannot run fails instead of skipping.
    env = {**os.environ, "PYSCHED_SCREENSHOTS_DIR": folder, "PYSCHED_REQUIRE_SERVICES": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "0", "-q",
                           "tests/test_dashboard_browser.py"], cwd=ROOT, env=env)
    if done.returncode == 0:
        print(f"screenshots: refreshed the *.png files in {folder}")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
