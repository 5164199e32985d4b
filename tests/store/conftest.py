"""Store fixtures: every store test runs against SQLite and a real PostgreSQL.

PostgreSQL is the Debian package's server (CI installs ``postgresql``), started once per
session from ``initdb`` in a temporary folder, on a free 127.0.0.1 port, with trust
authentication and no Unix socket. initdb refuses to run as root, so as root the server
runs as the ``postgres`` user (``nobody`` if there is none). Each test gets a fresh
database. Missing binaries fail the tests: they are a broken CI, not a reason to skip.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from aigw.store import Store, make_store
from tests.conftest import START_TIMEOUT_S, free_port

SUPERUSER = "aigw"


def postgres_bindir() -> Path:
    """Where initdb and postgres are: on PATH, or Debian's /usr/lib/postgresql/N/bin."""
    initdb = shutil.which("initdb")
    if initdb is not None:
        return Path(initdb).resolve().parent
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3])
    )
    if not found:
        pytest.fail("PostgreSQL is not installed (no initdb): apt-get install postgresql")
    return Path(found[-1]).parent


def server_user() -> pwd.struct_passwd | None:
    """The user the server runs as: ourselves unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("running as root and there is no postgres or nobody user to run PostgreSQL")


class Postgres:
    def __init__(self) -> None:
        bindir = postgres_bindir()
        self.user = server_user()
        self.folder = Path(tempfile.mkdtemp(prefix="aigw-pg-"))
        self.data = self.folder / "data"
        self.log_path = self.folder / "server.log"
        if self.user is not None:
            os.chown(self.folder, self.user.pw_uid, self.user.pw_gid)
        self._as_user(
            [str(bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
             "-E", "UTF8", "--locale=C", "--no-sync"],
        )  # fmt: skip
        self.port = free_port()
        self.admin_dsn = f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(self.data), "-h", "127.0.0.1",
                 "-p", str(self.port), "-c", "unix_socket_directories=",
                 # a test server: durability off, speed on
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, **self._user_args(),
            )  # fmt: skip
        self._wait_ready(bindir / "pg_isready")

    def _user_args(self) -> dict[str, Any]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _as_user(self, args: list[str]) -> None:
        done = subprocess.run(
            args, capture_output=True, cwd=self.folder, timeout=60, **self._user_args()
        )
        if done.returncode != 0:
            self.cleanup()
            output = (done.stdout + done.stderr).decode(errors="replace")
            pytest.fail(f"{args[0]} failed:\n{output}")

    def _wait_ready(self, pg_isready: Path) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        probe = [str(pg_isready), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER]
        while subprocess.run(probe, timeout=10).returncode != 0:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                log = self.log_path.read_text(errors="replace")
                self.stop()
                pytest.fail(f"PostgreSQL did not start:\n{log}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    server = Postgres()
    yield server
    server.stop()


@pytest.fixture
async def postgres_url(postgres: Postgres) -> AsyncIterator[str]:
    """A fresh, empty database of this test's own."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
        yield f"postgresql://{SUPERUSER}@127.0.0.1:{postgres.port}/{name}"
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aigw.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """A migrated store, closed after the test."""
    opened = make_store(store_url, timeout_s=10.0)
    await opened.migrate()
    yield opened
    await opened.close()
