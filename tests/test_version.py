"""One version, defined once: ``pysched_lightning.__version__``, which
setup.cfg reads (``attr:``), so the installed metadata (``pip show``) and
``pysched --version`` say the same."""
from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import subprocess
import sys
import urllib.parse
import urllib.request

import pytest

import pysched_lightning
from services import missing

ROOT = pathlib.Path(__file__).resolve().parent.parent
DISTRIBUTION = "pysched-lightning"  # setup.cfg's [metadata] name


def test_setup_cfg_takes_its_version_from_the_package():
    setupcfg = pytest.importorskip("setuptools.config.setupcfg",
                                   reason="setuptools is not installed")
    metadata = setupcfg.read_configuration(str(ROOT / "setup.cfg"))["metadata"]
    assert metadata["name"] == DISTRIBUTION
    assert metadata["version"] == pysched_lightning.__version__


def _installed_from() -> "pathlib.Path | None":
    """The folder the installed distribution was built from, when pip recorded it."""
    recorded = importlib.metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    url = json.loads(recorded).get("url", "") if recorded else ""
    if not url.startswith("file:"):
        return None
    return pathlib.Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path)).resolve()


def test_the_installed_version_is_the_package_version_and_pysched_says_it():
    try:
        installed = importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        missing(f"{DISTRIBUTION} is not installed (pip install -e . in {ROOT})")
    origin = _installed_from()
    if origin is not None and origin != ROOT:
        missing(f"{DISTRIBUTION} is installed from another checkout ({origin}), whose "
                "metadata may say another version than this one")
    script = pathlib.Path(sys.executable).with_name("pysched")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pysched_lightning"]
    done = subprocess.run(command + ["--version"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert installed == pysched_lightning.__version__
    assert done.stdout.split() == ["pysched", pysched_lightning.__version__]
