"""PgBouncer in transaction mode (what Supabase's pooler on port 6543 runs) in front of a
ThrowawayPostgres: Debian's `pgbouncer`, as the postgres user, on a free 127.0.0.1 port.

Every database of the server is reachable through it under its own name (the `*` fallback entry),
so `create_database()` gives the pooled URL of a fresh database. Clients authenticate to PgBouncer
with a password (md5 against its auth_file, as a client of Supabase's pooler does); PgBouncer logs
in to the throwaway server as `postgres`.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.pg import ThrowawayPostgres, free_port

PASSWORD = "pooler-secret"


def pgbouncer_binary() -> str:
    found = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
    if not found:
        raise RuntimeError("pgbouncer not found: run scripts/test (it installs Debian's pgbouncer)")
    return found


class PgBouncer:
    def __init__(self, upstream: ThrowawayPostgres) -> None:
        self.upstream = upstream
        self.binary = pgbouncer_binary()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="agentdash-pgbouncer-"))
        self.ini = self.dir / "pgbouncer.ini"
        self.logfile = self.dir / "pgbouncer.log"
        (self.dir / "userlist.txt").write_text(f'"postgres" "{PASSWORD}"\n')
        self.ini.write_text(f"""\
[databases]
* = host=127.0.0.1 port={upstream.port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = md5
auth_file = {self.dir / 'userlist.txt'}
pool_mode = transaction
max_client_conn = 1000
default_pool_size = 20
max_db_connections = 40
max_user_connections = 120
server_idle_timeout = 10
autodb_idle_timeout = 60
logfile = {self.logfile}
pidfile = {self.dir / 'pgbouncer.pid'}
admin_users = postgres
log_connections = 0
log_disconnections = 0
""")
        self.as_root = os.geteuid() == 0
        if self.as_root:  # pgbouncer refuses to run as root, like initdb
            for p in (self.dir, *self.dir.iterdir()):
                shutil.chown(p, "postgres", "postgres")
            os.chmod(self.dir / "userlist.txt", 0o600)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """CREATE DATABASE on the server itself (it cannot run in a pooled transaction); the pooled URL."""
        self.upstream.create_database(name)
        return self.url_for(name)

    def start(self, timeout: float = 30) -> None:
        cmd = [self.binary, str(self.ini)]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        import psycopg2

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
            try:
                conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD,
                                        dbname="postgres", connect_timeout=2)
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                conn.close()
                return
            except psycopg2.OperationalError as exc:
                last = exc
                time.sleep(0.1)
        raise RuntimeError(f"pgbouncer not answering after {timeout}s ({last}):\n{self.log()}")

    def show(self, what: str) -> list[dict]:
        """SHOW <what> on PgBouncer's admin console (POOLS, STATS, CONFIG, ...) as dicts."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", password=PASSWORD,
                                dbname="pgbouncer")
        conn.autocommit = True  # the console runs no transactions
        try:
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                cols = [c.name for c in cur.description]
                return [dict(zip(cols, row)) for row in cur.fetchall()]
        finally:
            conn.close()

    def log(self) -> str:
        try:
            return self.logfile.read_text()[-5000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
