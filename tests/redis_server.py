"""Start and stop a real ``redis-server`` on 127.0.0.1 for tests and benchmarks.

A plain module (no pytest): ``RedisServer().start()`` picks a free port on the loopback
interface, runs ``redis-server`` without persistence, and returns once it answers PING.
:meth:`RedisServer.restart` stops it and starts it again on the same port. Only 127.0.0.1
is ever used.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from typing import Any, Dict, List, Optional

__all__ = ["RedisServer", "redis_server_path", "free_port", "make_tls_files", "HOST"]

HOST = "127.0.0.1"


def redis_server_path() -> Optional[str]:
    """The path of the ``redis-server`` executable, or None when it is not installed."""
    return shutil.which("redis-server")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def make_tls_files(directory: str) -> Dict[str, str]:
    """A throw-away certificate authority and a server certificate for 127.0.0.1, as PEM
    files in ``directory``: paths under ``"ca"``, ``"cert"`` and ``"key"``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def certificate(subject: str, key: Any, issuer: Any, signer: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kvstore test CA")])
    ca = certificate("kvstore test CA", ca_key, ca_name, ca_key, True)
    cert = certificate(HOST, key, ca_name, ca_key, False)
    paths = {name: os.path.join(directory, f"{name}.pem") for name in ("ca", "cert", "key")}
    pem = serialization.Encoding.PEM
    for name, data in (("ca", ca.public_bytes(pem)), ("cert", cert.public_bytes(pem)),
                       ("key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))):
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths


def _command(*args: str) -> bytes:
    """One command in the Redis protocol (RESP)."""
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RedisServer:
    """A ``redis-server`` process listening on 127.0.0.1.

    Parameters
    ----------
    port : the port; None picks a free one (kept across restarts).
    password : when given, the server runs with ``--requirepass``.
    tls : when True, the server speaks TLS only, with a certificate for 127.0.0.1 signed by
        a throw-away authority (:attr:`tls_files`; :attr:`url` is ``rediss://`` and names
        that authority's file).
    executable : the redis-server program.
    extra_args : more command-line arguments.
    """

    def __init__(self, port: Optional[int] = None, *, password: Optional[str] = None,
                 tls: bool = False, executable: Optional[str] = None,
                 extra_args: Optional[List[str]] = None) -> None:
        found = executable or redis_server_path()
        if found is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self.executable: str = found
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args or [])
        self.tls = bool(tls)
        self.tls_files: Dict[str, str] = {}
        self.process: Optional[subprocess.Popen] = None
        self._dir: Optional[str] = None

    @property
    def host(self) -> str:
        """Always ``127.0.0.1``."""
        return HOST

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:PORT/0``; with TLS ``rediss://...?ssl_ca_certs=``
        (the file of the authority that signed the server's certificate)."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            query = urllib.parse.urlencode({"ssl_ca_certs": self.tls_files["ca"]})
            return f"rediss://{auth}{HOST}:{self.port}/0?{query}"
        return f"redis://{auth}{HOST}:{self.port}/0"

    def is_running(self) -> bool:
        """Whether the server process is alive."""
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING (at most ``timeout`` seconds).

        Raises
        ------
        RuntimeError : the server exited or did not answer in time (its log is quoted).
        """
        if self.is_running():
            return self
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="kvstore-redis-")
        logfile = os.path.join(self._dir, "redis.log")
        args = [self.executable, "--port", str(self.port), "--bind", HOST,
                "--save", "", "--appendonly", "no", "--dir", self._dir,
                "--logfile", logfile, "--daemonize", "no"]
        if self.tls:
            if not self.tls_files:
                self.tls_files = make_tls_files(self._dir)
            args[1:3] = ["--port", "0", "--tls-port", str(self.port),
                         "--tls-cert-file", self.tls_files["cert"],
                         "--tls-key-file", self.tls_files["key"],
                         "--tls-ca-cert-file", self.tls_files["ca"],
                         "--tls-auth-clients", "no"]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}: "
                                   f"{self._log_tail(logfile)}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server did not answer PING within {timeout}s: "
                           f"{self._log_tail(logfile)}")

    def ping(self, timeout: float = 0.5) -> bool:
        """Whether the server answers PING now (authenticating when it has a password)."""
        try:
            sock: Any = socket.create_connection((HOST, self.port), timeout=timeout)
        except OSError:
            return False
        try:
            if self.tls:
                context = ssl.create_default_context(cafile=self.tls_files["ca"])
                sock = context.wrap_socket(sock, server_hostname=HOST)
            request = b""
            if self.password:
                request += _command("AUTH", self.password)
            request += _command("PING")
            sock.sendall(request)
            reply = b""
            while b"PONG" not in reply:
                chunk = sock.recv(256)
                if not chunk:
                    return False
                reply += chunk
                if reply.startswith(b"-") and reply.endswith(b"\r\n"):
                    return False
            return True
        except OSError:
            return False
        finally:
            sock.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout``); the port is kept."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self, timeout: float = 10.0) -> RedisServer:
        """Stop the server and start a fresh one on the same port (no data survives)."""
        self.stop()
        return self.start(timeout)

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _log_tail(self, logfile: str) -> str:
        try:
            with open(logfile, encoding="utf-8", errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<RedisServer {HOST}:{self.port} running={self.is_running()}>"
