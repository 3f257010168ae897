"""A throwaway PostgreSQL server for the tests: the distribution's binaries (Debian's
postgresql-NN, which `make test` installs when missing), a fresh cluster in a temporary
directory, listening on 127.0.0.1 and a free port only, a random password, stopped by its
process id (SIGINT: PostgreSQL's "fast" shutdown) and deleted afterwards.

PostgreSQL refuses to run as root ("root execution of the PostgreSQL server is not permitted"),
and tests and CI run as root: then initdb and postgres run as the `postgres` system user that
the package creates (subprocess's user=/group=, no su or sudo), in a directory that user owns.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from tests.server.conftest import free_port, start, stop, wait_until

# Debian keeps the server binaries off PATH, one folder per major version.
SEARCH = "/usr/lib/postgresql/*/bin"


@dataclass(frozen=True)
class Postgres:
    port: int
    user: str
    password: str
    database: str

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Prefect's PREFECT_API_DATABASE_CONNECTION_URL takes."""
        return (f"postgresql+asyncpg://{self.user}:{self.password}@127.0.0.1:{self.port}"
                f"/{self.database}")


def find_bindir() -> Path | None:
    """The folder holding initdb and postgres: on PATH, else Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # e.g. a link in /usr/local/bin
    found = sorted(glob.glob(SEARCH), key=lambda p: int(Path(p).parent.name)
                   if Path(p).parent.name.isdigit() else 0)
    return Path(found[-1]) if found and (Path(found[-1]) / "initdb").is_file() else None


def server_user() -> pwd.struct_passwd | None:
    """Who runs the server: `postgres` when we are root, else ourselves (None: nobody can)."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


@contextlib.contextmanager
def running_postgres(database: str = "prefect") -> Iterator[Postgres]:
    """Start a fresh PostgreSQL cluster; yield how to reach it; stop it and delete its files."""
    bindir, user = find_bindir(), server_user()
    if bindir is None:
        pytest.skip(f"PostgreSQL server binaries not found (no initdb on PATH or in {SEARCH}); "
                    "`make test` installs them as root with apt-get install postgresql")
    if user is None:
        pytest.skip("running as root and no `postgres` system user to run PostgreSQL as")
    as_user = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []} \
        if os.geteuid() == 0 else {}
    # In /tmp rather than pytest's tmp_path: that one sits under a root-only directory.
    root = Path(tempfile.mkdtemp(prefix="alexnet-pg-"))
    try:
        os.chown(root, user.pw_uid, user.pw_gid)
        password = secrets.token_hex(16)
        pwfile = root / "pw"
        pwfile.write_text(password + "\n")
        os.chown(pwfile, user.pw_uid, user.pw_gid)
        data, port, name = root / "data", free_port(), "alexnet"
        env = {"PATH": f"{bindir}:/usr/bin:/bin", "LC_ALL": "C.UTF-8", "HOME": str(root)}
        done = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", name,
                               f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                               "--no-sync"], env=env, capture_output=True, text=True,
                              timeout=300, **as_user)
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        log = root / "postgres.log"
        # TCP on 127.0.0.1 only; the unix socket in our own directory, not /run/postgresql.
        server = _start_as(
            [str(bindir / "postgres"), "-D", str(data), "-p", str(port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={root}",
             "-c", "fsync=off"], env, log, as_user)
        try:
            client_env = {**env, "PGPASSWORD": password}
            reach = ["-h", "127.0.0.1", "-p", str(port), "-U", name]
            wait_until(lambda: subprocess.run([str(bindir / "pg_isready"), *reach, "-d", "postgres"],
                                              env=client_env, capture_output=True).returncode == 0,
                       120, "postgres", server, log)
            created = subprocess.run([str(bindir / "createdb"), *reach, database],
                                     env=client_env, capture_output=True, text=True, timeout=60)
            assert created.returncode == 0, created.stderr
            yield Postgres(port=port, user=name, password=password, database=database)
        finally:
            _fast_shutdown(server)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _start_as(cmd: list[str], env: dict, log: Path, as_user: dict) -> subprocess.Popen:
    if not as_user:
        return start(cmd, env, log)
    with log.open("w") as out:  # `start` in tests/server/conftest.py, as another user
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **as_user)


def _fast_shutdown(server: subprocess.Popen) -> None:
    """SIGINT to the postmaster: "fast" shutdown (sessions ended, no wait for clients)."""
    if server.poll() is None:
        os.kill(server.pid, signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    stop(server)  # whatever is left of its process group
