"""A real IMAP server for the tests: Debian's Dovecot, started unprivileged in a temporary directory.

    with ImapServer("reader", "secret") as server:
        server.append("Newsletters", raw_message)
        imaplib.IMAP4_SSL(server.host, server.imaps_port, ssl_context=server.ssl_context())

The instance has its own dovecot.conf (nothing from /etc/dovecot is read), a self-signed certificate
made with the openssl CLI (CN=localhost, subjectAltName DNS:localhost and IP:127.0.0.1; `cafile`
verifies it), IMAPS and plain IMAP (STARTTLS) on free 127.0.0.1 ports, `ssl = required`, a
passwd-file with one user and a maildir under the temporary directory.

Who the processes run as:
- as root (a container, this machine): the Debian package's system users, `dovecot` for the
  internal services and the mail process (the maildir is chowned to it; Dovecot refuses mail access
  as uid 0) and `dovenull` for the login processes, with Dovecot's default chroots. The temporary
  directory is made 0711 so that those users can reach their files in it (its parent, the system
  temporary directory, must let them through too: /tmp does).
- as any other user (a non-root CI): every service runs as that user (it cannot switch users), the
  passwd-file maps the test user to that uid/gid and the chroots are switched off, as Dovecot's
  rootless set-up asks. The user needs a passwd entry (Dovecot looks the name up) and the dovecot
  binaries must be installed (scripts/install-system-deps.sh, which needs root or sudo once).
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
DOVECOT_SBIN = "/usr/sbin/dovecot"  # not on every non-root PATH
IMAP_BINARY = "/usr/lib/dovecot/imap"  # dovecot-imapd; dovecot-core alone has no IMAP
INSTALL_HINT = "run scripts/install-system-deps.sh (it installs dovecot-imapd and openssl from Debian)"
# Services whose default chroot an unprivileged master cannot set up.
CHROOTED_SERVICES = (
    "aggregator",
    "anvil",
    "director",
    "imap-login",
    "imap-urlauth-login",
    "ipc",
    "old-stats",
    "pop3-login",
    "submission-login",
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _find_dovecot() -> str:
    for candidate in (shutil.which("dovecot"), DOVECOT_SBIN):
        if candidate and os.access(candidate, os.X_OK):
            if not os.access(IMAP_BINARY, os.X_OK):
                raise RuntimeError(
                    f"dovecot is installed without its IMAP server ({IMAP_BINARY}): {INSTALL_HINT}"
                )
            return candidate
    raise RuntimeError(f"dovecot is not installed, so the tests cannot start an IMAP server: {INSTALL_HINT}")


def _find_openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise RuntimeError(
            f"the openssl CLI is not installed (the IMAP test certificate needs it): {INSTALL_HINT}"
        )
    return found


class ImapServer:
    """One Dovecot instance for one test user; a context manager (start on enter, stop on exit)."""

    def __init__(self, user: str = "reader", password: str = "reader-password", timeout: float = 15) -> None:
        for name, value in (("user", user), ("password", password)):
            if not value or any(c in value for c in ":\n\r\t ") or not value.isprintable():
                raise ValueError(f"{name} must be non-empty printable text without ':' or whitespace")
        self.host = HOST
        self.user = user
        self.password = password
        self.timeout = timeout
        self.imaps_port = 0
        self.imap_port = 0
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None

    # -- paths ------------------------------------------------------------------------------------
    def _path(self, *parts: str) -> Path:
        if self.root is None:
            raise RuntimeError("ImapServer is not started")
        return self.root.joinpath(*parts)

    @property
    def cafile(self) -> str:
        """The server's self-signed certificate (PEM): the CA to verify TLS against."""
        return str(self._path("tls", "cert.pem"))

    @property
    def log_path(self) -> Path:
        return self._path("dovecot.log")

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that verifies the server against `cafile` (hostname included)."""
        return ssl.create_default_context(cafile=self.cafile)

    # -- lifecycle --------------------------------------------------------------------------------
    def __enter__(self) -> ImapServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self.process is not None:
            raise RuntimeError("ImapServer already started")
        dovecot = _find_dovecot()
        openssl = _find_openssl()
        self.root = Path(tempfile.mkdtemp(prefix="imap-server-"))
        try:
            self._prepare(openssl)
            self._launch(dovecot)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _identities(self) -> tuple[str, str, int, int]:
        """(internal user, login user, mail uid, mail gid) for the way the tests run."""
        if os.geteuid() == 0:
            try:
                internal = pwd.getpwnam("dovecot")
                pwd.getpwnam("dovenull")
            except KeyError as missing:
                raise RuntimeError(
                    f"the dovecot system users are missing ({missing}): {INSTALL_HINT}"
                ) from None
            return "dovecot", "dovenull", internal.pw_uid, internal.pw_gid
        me = pwd.getpwuid(os.geteuid())  # KeyError: the user has no passwd entry, which Dovecot needs too
        return me.pw_name, me.pw_name, me.pw_uid, os.getegid()

    def _prepare(self, openssl: str) -> None:
        root = self._path()
        internal_user, login_user, uid, gid = self._identities()
        as_root = os.geteuid() == 0
        if as_root:
            root.chmod(0o711)  # the dovecot users traverse it to their files; they cannot list it

        tls = self._path("tls")
        tls.mkdir(mode=0o700)
        command = [openssl, "req", "-x509", "-nodes", "-days", "2", "-subj", "/CN=localhost"]
        command += ["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
        command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
        command += ["-keyout", str(tls / "key.pem"), "-out", str(tls / "cert.pem")]
        subprocess.run(command, check=True, capture_output=True, timeout=30)
        (tls / "cert.pem").chmod(0o644)
        if as_root:
            tls.chmod(0o711)  # clients (any user) may read the certificate; the key stays 0600 root

        mail = self._path("mail")
        mail.mkdir()
        home = mail / self.user
        home.mkdir()
        passwd_file = self._path("users.passwd")
        passwd_file.write_text(f"{self.user}:{{PLAIN}}{self.password}:{uid}:{gid}::{home}::\n")
        passwd_file.chmod(0o600)
        if as_root:
            os.chown(mail, uid, gid)
            os.chown(home, uid, gid)
            os.chown(passwd_file, uid, gid)  # the auth service runs as the internal user (dovecot)

        self.imaps_port = _free_port()
        self.imap_port = _free_port()
        while self.imap_port == self.imaps_port:
            self.imap_port = _free_port()
        chroots = "" if as_root else "".join(f"service {s} {{\n  chroot =\n}}\n" for s in CHROOTED_SERVICES)
        group = grp.getgrgid(gid).gr_name
        config = f"""\
# Written by tests/imap_server.py for one test run.
instance_name = test-imap-{os.getpid()}-{root.name}
base_dir = {self._path("run")}
state_dir = {self._path("state")}
log_path = {self.log_path}
info_log_path = {self.log_path}
debug_log_path = {self.log_path}
protocols = imap
listen = {HOST}
default_internal_user = {internal_user}
default_internal_group = {group}
default_login_user = {login_user}
first_valid_uid = {uid}
last_valid_uid = 0
first_valid_gid = {gid}
last_valid_gid = 0

ssl = required
ssl_cert = <{tls / "cert.pem"}
ssl_key = <{tls / "key.pem"}
ssl_min_protocol = TLSv1.2

auth_mechanisms = plain login
auth_verbose = yes
# Dovecot answers a failed login after 2 s by default; the tests need no brute-force brake.
auth_failure_delay = 0
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {passwd_file}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {passwd_file}
}}
mail_location = maildir:{home}/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}

service imap-login {{
  inet_listener imap {{
    address = {HOST}
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = {HOST}
    port = {self.imaps_port}
    ssl = yes
  }}
}}
{chroots}"""
        self._path("dovecot.conf").write_text(config)

    def _launch(self, dovecot: str) -> None:
        stderr = self._path("dovecot.stderr").open("wb")
        with stderr:
            # -F: the master stays in the foreground as our child, so stop() signals exactly it.
            self.process = subprocess.Popen(
                [dovecot, "-F", "-c", str(self._path("dovecot.conf"))],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        """Until both ports greet with `* OK` (the master binds them before its children are up)."""
        deadline = time.monotonic() + self.timeout
        pending = {self.imap_port: False, self.imaps_port: True}
        while pending:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"dovecot not ready on {sorted(pending)} after {self.timeout}s:\n{self.output()}"
                )
            for port, use_tls in list(pending.items()):
                with contextlib.suppress(OSError):
                    with socket.create_connection((self.host, port), timeout=2) as raw:
                        if use_tls:
                            with self.ssl_context().wrap_socket(raw, server_hostname=self.host) as conn:
                                greeting = conn.recv(256)
                        else:
                            greeting = raw.recv(256)
                    if greeting.startswith(b"* OK"):
                        del pending[port]
            if pending:
                time.sleep(0.02)

    def logins(self, at_least: int = 0, timeout: float = 5) -> list[tuple[str, bool]]:
        """(user, over TLS) for each successful login in dovecot.log, waiting for `at_least` of them.

        The log process writes asynchronously, so a login just made can take a moment to show up.
        Over loopback Dovecot counts a plain connection as secured (remote IP == local IP), so
        `ssl = required` does not refuse a plaintext LOGIN on `imap_port`: a test that wants the
        client to use STARTTLS asserts it here (False = the password crossed in plaintext).
        """
        deadline = time.monotonic() + timeout
        while True:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            found = [
                (match.group(1), ", TLS," in line)
                for line in text.splitlines()
                if (match := re.search(r"imap-login: Info: Login: user=<([^>]*)>", line))
            ]
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def output(self) -> str:
        """The tail of the master's stderr and of dovecot.log, for error messages."""
        parts = []
        for name in ("dovecot.stderr", "dovecot.log"):
            path = self._path(name)
            if path.exists():
                parts.append(f"--- {name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM the master (it stops its children), wait for it, remove the temporary directory."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # its own session: the master and children
                process.wait()
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # -- client helpers ---------------------------------------------------------------------------
    def connect(self) -> imaplib.IMAP4_SSL:
        """A logged-in imaplib client over IMAPS, verified against `cafile`."""
        client = imaplib.IMAP4_SSL(self.host, self.imaps_port, ssl_context=self.ssl_context(), timeout=10)
        client.login(self.user, self.password)
        return client

    def append(self, folder: str, raw_message: bytes, flags: Iterable[str] = ()) -> None:
        """Upload one message (RFC 5322 bytes) to `folder`, creating the folder if needed."""
        client = self.connect()
        try:
            quoted = '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
            status, _ = client.select(quoted, readonly=True)
            if status != "OK":
                status, data = client.create(quoted)
                if status != "OK":
                    raise RuntimeError(f"CREATE {folder!r} failed: {data!r}")
            flag_list = "(" + " ".join(flags) + ")" if flags else None
            status, data = client.append(quoted, flag_list, None, raw_message)
            if status != "OK":
                raise RuntimeError(f"APPEND to {folder!r} failed: {data!r}")
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                client.logout()
