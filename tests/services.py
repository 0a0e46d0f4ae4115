"""Tests that need an outside server or a browser.

Locally a missing one skips the test with a reason; in CI
(``PYSCHED_REQUIRE_SERVICES=1``) it fails it, so CI never passes by skipping.
"""
from __future__ import annotations

import os
import shutil
import socket
from typing import NoReturn

import pytest

REQUIRED = os.environ.get("PYSCHED_REQUIRE_SERVICES") == "1"

RABBITMQ = ("127.0.0.1", 5672)
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
CHROMIUM = "/usr/bin/chromium"


def missing(reason: str) -> NoReturn:
    """Skip (locally) or fail (in CI) the calling test, saying why."""
    if REQUIRED:
        pytest.fail(f"{reason} (PYSCHED_REQUIRE_SERVICES=1: this test must run in CI)")
    pytest.skip(reason)


def require_port(host: str, port: int, what: str) -> None:
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError as exc:
        missing(f"{what} is not reachable on {host}:{port} ({exc})")


def require_rabbitmq() -> str:
    """The broker URL, once RabbitMQ answers on 127.0.0.1:5672."""
    require_port(*RABBITMQ, "RabbitMQ")
    return RABBITMQ_URL


def require_chromium() -> str:
    """The path of Debian's chromium, for Playwright's executable_path."""
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None:
        missing("no chromium browser (apt-get install -y chromium)")
    return path


POSTGRES = ("127.0.0.1", 5432)
#: The server's maintenance database: test databases are made and dropped from it.
POSTGRES_ADMIN_URL = os.environ.get("PYSCHED_TEST_POSTGRES",
                                    "postgresql://postgres@127.0.0.1:5432/postgres")


def require_postgres() -> str:
    """The admin URL, once PostgreSQL answers on 127.0.0.1:5432 and psycopg
    is installed."""
    require_port(*POSTGRES, "PostgreSQL")
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        missing(f"psycopg is not installed ({exc}); pip install '.[postgres]'")
    return POSTGRES_ADMIN_URL


def with_database(admin_url: str, name: str) -> str:
    """*admin_url* with its database replaced by *name*."""
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


def create_database(admin_url: str, name: str) -> str:
    """Make the empty database *name* (dropped first if a crashed run left
    it); returns its URL."""
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_database(admin_url, name)


def drop_database(admin_url: str, name: str) -> None:
    import psycopg
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
