"""A throwaway MariaDB/MySQL server for the tests: AIFARM_TEST_MYSQL_URL, or one started in a temp dir."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "no MariaDB/MySQL server binary (mariadbd or mysqld) was found: install one "
    "(Debian/Ubuntu: `sudo apt-get install -y mariadb-server`) or set AIFARM_TEST_MYSQL_URL "
    "to a server the tests may create databases on"
)


@dataclass
class MysqlServer:
    """A server the tests may create and drop databases on."""

    base_url: str  # mysql://user:pass@host:port (no database)
    process: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    datadir: Path | None = None
    port: int | None = None
    socket_path: Path | None = None
    bind_address: str = "127.0.0.1"

    def url(self, database: str) -> str:
        """The URL of one database on this server."""
        return f"{self.base_url}/{database}"

    def stop(self) -> None:
        """Stop a server this module started and delete its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kill(self) -> None:
        """Stop the server at once (for outage tests); `restart` brings it back on the same port."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)

    def restart(self) -> None:
        """Start a stopped server again on the same data dir, address and port."""
        assert self.datadir is not None and self.port is not None and self.workdir is not None
        self.process = _start(self.datadir, self.port, self.workdir, self.bind_address)


def _find_binary(*names: str) -> str | None:
    for name in names:
        for path in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
            if path and os.access(path, os.X_OK):
                return path
    return None


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(datadir: Path, port: int, workdir: Path, bind_address: str = "127.0.0.1") -> subprocess.Popen[bytes]:
    server = _find_binary("mariadbd", "mysqld")
    if server is None:
        raise RuntimeError(INSTALL_HINT)
    sock = workdir / "mysqld.sock"
    args = [
        server,
        "--no-defaults",
        f"--datadir={datadir}",
        f"--port={port}",
        f"--bind-address={bind_address}",
        f"--socket={sock}",
        f"--pid-file={workdir / 'mysqld.pid'}",
        "--skip-log-bin",
        "--innodb-buffer-pool-size=64M",
        "--innodb-flush-log-at-trx-commit=2",
        "--max-connections=500",
        f"--log-error={workdir / 'error.log'}",
    ]
    if os.geteuid() == 0:
        args.append("--user=root")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (workdir / "error.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the test MariaDB server exited at start:\n{log}")
        try:
            with socket.create_connection((bind_address, port), timeout=0.5) as conn:
                if conn.recv(1):
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the test MariaDB server did not answer within 60 s")


def start_server(bind_address: str = "127.0.0.1") -> MysqlServer:
    """AIFARM_TEST_MYSQL_URL's server, or a fresh throwaway one (raises RuntimeError saying how to get one)."""
    url = os.environ.get("AIFARM_TEST_MYSQL_URL")
    if url and bind_address == "127.0.0.1":
        return MysqlServer(base_url=url.rstrip("/").rsplit("/", 1)[0] if url.count("/") > 2 else url.rstrip("/"))
    install_db = _find_binary("mariadb-install-db", "mysql_install_db")
    if install_db is None:
        raise RuntimeError(INSTALL_HINT)
    workdir = Path(tempfile.mkdtemp(prefix="aifarm-mysql-"))
    os.chmod(workdir, 0o755)
    datadir = workdir / "data"
    args = [install_db, f"--datadir={datadir}", "--auth-root-authentication-method=normal", "--skip-test-db"]
    if os.geteuid() == 0:
        args.append("--user=root")
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(f"mariadb-install-db failed: {done.stderr[-2000:]}")
    port = free_port()
    process = _start(datadir, port, workdir, bind_address)
    return MysqlServer(
        base_url=f"mysql://root@{bind_address}:{port}",
        process=process,
        workdir=workdir,
        datadir=datadir,
        port=port,
        socket_path=workdir / "mysqld.sock",
        bind_address=bind_address,
    )
