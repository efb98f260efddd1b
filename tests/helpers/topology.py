"""The deployment's topology on loopback, without containers: a real PostgreSQL server, real
`rlchat serve` replicas, and Debian's nginx with deploy/nginx's configuration.

Used by tests/deploy and by benchmarks/serve_load.py. PostgreSQL refuses to run as root, as
tests and CI do, so as root its server runs as ``nobody`` (``runuser``).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NGINX_CONF = REPO / "deploy" / "nginx" / "rlchat.conf"
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
UNPRIVILEGED = "nobody"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(check, what: str, timeout_s: float = 60.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout_s:.0f} s")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def missing_tools() -> list[str]:
    """What this machine lacks to run the topology (empty when all is there)."""
    missing = [] if shutil.which("nginx") else ["nginx (apt-get install nginx)"]
    if not (POSTGRES_BIN / "postgres").exists():
        missing.append(f"PostgreSQL server at {POSTGRES_BIN} (apt-get install postgresql)")
    return missing


class Postgres:
    """A throw-away PostgreSQL cluster on a loopback port, with role and database ``rlchat``."""

    PASSWORD = "rlchat-test-password"

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp dir: the server's user must be able to reach its data.
        self.dir = Path(tempfile.mkdtemp(prefix="rlchat-pg-"))
        self.data = self.dir / "data"
        self.process: subprocess.Popen | None = None
        password_file = self.dir / "password"
        password_file.write_text(self.PASSWORD)
        if os.geteuid() == 0:
            shutil.chown(self.dir, UNPRIVILEGED)
            shutil.chown(password_file, UNPRIVILEGED)
        self._as_owner(
            POSTGRES_BIN / "initdb", "-D", self.data, "-U", "rlchat", "--auth=scram-sha-256",
            f"--pwfile={password_file}", "--no-sync", "--encoding=UTF8",
        )  # fmt: skip

    @property
    def url(self) -> str:
        return f"postgresql://rlchat:{self.PASSWORD}@127.0.0.1:{self.port}/rlchat"

    def start(self) -> Postgres:
        command = [
            POSTGRES_BIN / "postgres", "-D", self.data, "-p", str(self.port),
            "-h", "127.0.0.1", "-k", self.dir, "-c", "fsync=off", "-c", "max_connections=100",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            self._owner_command(*command), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(self._accepts, "PostgreSQL")
        self._create_database()
        return self

    def stop(self) -> None:
        """A fast shutdown (SIGINT): clients are disconnected, the data kept."""
        if self.process and self.process.poll() is None:
            # To the postmaster itself: runuser, its parent, does not pass signals on.
            postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(postmaster, signal.SIGINT)
            self.process.wait(30)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def query(self, sql: str) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url, connect_timeout=5) as connection:
            return connection.execute(sql).fetchall()

    def _accepts(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"postgres exited: {self.process.stderr.read().decode()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True

    def _create_database(self) -> None:
        import psycopg

        admin = self.url.rsplit("/", 1)[0] + "/postgres"
        for _ in range(50):  # the port answers a moment before logins are accepted
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as connection:
                    exists = connection.execute(
                        "SELECT 1 FROM pg_database WHERE datname = 'rlchat'"
                    ).fetchone()
                    if not exists:
                        connection.execute("CREATE DATABASE rlchat")
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL accepted no login")

    def _owner_command(self, *command: str | Path) -> list[str]:
        prefix = ["runuser", "-u", UNPRIVILEGED, "--"] if os.geteuid() == 0 else []
        return [*prefix, *map(str, command)]

    def _as_owner(self, *command: str | Path) -> None:
        result = subprocess.run(self._owner_command(*command), capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr[-2000:]}")


class Replica:
    """One `rlchat serve` process on a loopback port."""

    def __init__(self, run: Path, database: str, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.command = [
            sys.executable, "-m", "rlchat", "serve", str(run), "--host", "127.0.0.1",
            "--port", str(self.port), "--database", database, "--device", "cpu", *extra,
        ]  # fmt: skip
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Replica:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._ready, f"replica on port {self.port}", timeout_s=120)
        return self

    def kill(self) -> None:
        """SIGKILL: no chance to finish anything, as a crash or the OOM killer."""
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"replica exited; log: {self.log.read_text()[-3000:]}")
        return http_status(f"{self.url}/readyz") == 200


class Nginx:
    """Debian's nginx running deploy/nginx/rlchat.conf, with only its listening port and its
    replicas' ports set for this machine."""

    def __init__(self, replica_ports: list[int]) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="rlchat-nginx-"))
        os.chmod(self.dir, 0o755)  # nginx's workers run unprivileged
        site = NGINX_CONF.read_text()
        if site.count("listen 80;") != 1:
            raise RuntimeError(f"{NGINX_CONF} should listen on port 80 exactly once")
        (self.dir / "rlchat.conf").write_text(
            site.replace("listen 80;", f"listen 127.0.0.1:{self.port};")
        )
        (self.dir / "rlchat-replicas.conf").write_text(
            "".join(
                f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;\n" for port in replica_ports
            )
        )
        temp = self.dir / "temp"
        temp.mkdir(mode=0o777)
        os.chmod(temp, 0o777)
        (self.dir / "nginx.conf").write_text(
            f"""daemon off;
worker_processes 1;
pid {self.dir}/nginx.pid;
error_log {self.dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {self.dir}/rlchat.conf;
}}
"""
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        self.process = subprocess.Popen(
            ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for(self._accepts, "nginx")
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish open requests
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _accepts(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"nginx exited: {self.process.stderr.read().decode()[-2000:]}")
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return True


async def chat_and_rate(url: str, clients: int, seconds: float, during=None) -> dict:  # noqa: ANN001
    """``clients`` users chatting and rating each reply until ``seconds`` pass, while the
    coroutine ``during`` (a fault, say) runs; every rating the API acknowledged is recorded,
    so that none can be lost unseen."""
    import httpx

    results = {"requests": 0, "failures": [], "acknowledged": set()}
    started = time.monotonic()
    deadline = time.monotonic() + seconds

    async def user(client: httpx.AsyncClient, number: int) -> None:
        while time.monotonic() < deadline:
            results["requests"] += 1
            try:
                reply = await client.post(
                    "/api/v1/chat",
                    json={"message": f"user {number} says hi", "decoding": {"strategy": "greedy"}},
                )
                if reply.status_code != 200:
                    results["failures"].append(f"chat {reply.status_code}")
                    continue
                turn = reply.json()
                rating = {"conversation_id": turn["conversation_id"], "turn": turn["turn"],
                          "rating": random.choice(["up", "down"])}  # fmt: skip
                results["requests"] += 1
                rated = await client.post("/api/v1/feedback", json=rating)
                if rated.status_code == 200:
                    results["acknowledged"].add((turn["conversation_id"], turn["turn"]))
                else:
                    results["failures"].append(f"feedback {rated.status_code}")
            except httpx.HTTPError as error:
                results["failures"].append(repr(error))

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        await asyncio.gather(
            *(user(client, i) for i in range(clients)), *([during] if during else [])
        )
    results["seconds"] = time.monotonic() - started
    return results
