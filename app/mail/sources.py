"""Where `enhancer ingest` reads e-mails from: .eml files, directories of them, mbox files, Maildir
folders, and IMAP folders (`imap://user@host[:port]/Folder`, with imap-tools).

Every source yields `RawEmail`s in a stable order; a message that cannot even be read yields one
with `error` set, so the run reports it and goes on. The IMAP source remembers, per account and
folder, the highest UID delivered (`IngestState`, a JSON file in the data dir, written after each
accepted e-mail): a run that was killed resumes after the last e-mail the service accepted.
"""

from __future__ import annotations

import contextlib
import json
import mailbox
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlsplit

from app.mail.message import parse_date

IMAP_PASSWORD_ENV = "ENHANCER_IMAP_PASSWORD"


@dataclass
class RawEmail:
    label: str  # where it came from, for the report: a path, "mbox[12]", "imap:INBOX/uid 42"
    raw: bytes | None
    error: str | None = None
    accepted: Callable[[], None] = field(default=lambda: None)  # call once the service accepted it


class SourceError(ValueError):
    """A source that cannot be opened at all (missing file, bad URL, refused login)."""


# Files ------------------------------------------------------------------------------------------


def _is_maildir(path: Path) -> bool:
    return path.is_dir() and all((path / sub).is_dir() for sub in ("cur", "new"))


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(5) == b"From "


def _message_date(raw: bytes) -> date | None:
    head = raw[:16384].split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
    for line in head.splitlines():
        if line[:5].lower() == b"date:":
            parsed = parse_date(line[5:].decode("ascii", "replace").strip())
            return parsed.date() if parsed else None
    return None


def _mailbox_messages(box: mailbox.Mailbox, label: str) -> Iterator[RawEmail]:  # type: ignore[type-arg]
    for key in sorted(box.keys()) if isinstance(box, mailbox.Maildir) else box.keys():
        try:
            yield RawEmail(f"{label}[{key}]", box.get_bytes(key))
        except Exception as error:  # one unreadable entry; the others go on
            yield RawEmail(f"{label}[{key}]", None, f"unreadable: {error}")


def file_emails(path: Path) -> Iterator[RawEmail]:
    """A .eml file, an mbox file, a Maildir, or a directory searched for all of these."""
    if _is_maildir(path):
        yield from _mailbox_messages(mailbox.Maildir(path, create=False), str(path))
    elif path.is_dir():
        for child in sorted(path.rglob("*")):
            if _is_maildir(child):
                yield from _mailbox_messages(mailbox.Maildir(child, create=False), str(child))
            elif child.is_file() and child.suffix.lower() == ".eml":
                yield _eml(child)
            elif child.is_file() and child.suffix.lower() in (".mbox", ".mbx") and _is_mbox(child):
                yield from _mailbox_messages(mailbox.mbox(child, create=False), str(child))
    elif path.is_file():
        if _is_mbox(path):
            yield from _mailbox_messages(mailbox.mbox(path, create=False), str(path))
        else:
            yield _eml(path)
    else:
        raise SourceError(f"{path}: no such file or directory")


def _eml(path: Path) -> RawEmail:
    try:
        return RawEmail(str(path), path.read_bytes())
    except OSError as error:
        return RawEmail(str(path), None, f"unreadable: {error.strerror or error}")


def since_filter(emails: Iterator[RawEmail], since: date | None) -> Iterator[RawEmail]:
    for message in emails:
        sent = _message_date(message.raw) if message.raw is not None and since else None
        if since is None or sent is None or sent >= since:
            yield message


# IMAP -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImapUrl:
    user: str
    host: str
    port: int
    folder: str

    @property
    def account(self) -> str:
        """The state file's key: never the password."""
        return f"{self.user}@{self.host}:{self.port}/{self.folder}"


def parse_imap_url(url: str, *, starttls: bool = False) -> ImapUrl:
    parts = urlsplit(url)
    if parts.scheme.lower() != "imap":
        raise SourceError(f"{url}: not an imap:// URL")
    if parts.password:
        raise SourceError(f"put no password in the URL: set {IMAP_PASSWORD_ENV} or answer the prompt")
    if not parts.username or not parts.hostname:
        raise SourceError(f"{url}: expected imap://user@host[:port]/Folder")
    try:
        port = parts.port or (143 if starttls else 993)
    except ValueError:
        raise SourceError(f"{url}: the port is not a number") from None
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    return ImapUrl(unquote(parts.username), parts.hostname, port, folder)


class IngestState:
    """Per IMAP account and folder: the UIDVALIDITY seen and the highest UID the service accepted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._data: dict[str, dict[str, int]] = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            self._data = {}
        except (OSError, ValueError) as error:
            raise SourceError(
                f"{path}: unreadable ingest state ({error}); move it aside to start over"
            ) from None

    def last_uid(self, account: str, uidvalidity: int) -> int:
        entry = self._data.get(account)
        return entry["last_uid"] if entry and entry.get("uidvalidity") == uidvalidity else 0

    def accept(self, account: str, uidvalidity: int, uid: int) -> None:
        entry = self._data.get(account)
        if entry and entry.get("uidvalidity") == uidvalidity and entry["last_uid"] >= uid:
            return
        self._data[account] = {"uidvalidity": uidvalidity, "last_uid": uid}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ingest-state-")
        with os.fdopen(fd, "w", encoding="utf-8") as out:  # atomic: a kill never leaves half a file
            json.dump(self._data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)


def imap_emails(
    url: ImapUrl,
    password: str,
    state: IngestState,
    *,
    since: date | None = None,
    mark_seen: bool = False,
    starttls: bool = False,
    cafile: str | None = None,
    count: Callable[[int], None] = lambda _: None,
) -> Iterator[RawEmail]:
    """The folder's messages after the last accepted UID, oldest first; TLS always (implicit, or
    STARTTLS with `starttls`), the server's certificate verified (against `cafile` when given)."""
    from imap_tools import AND, MailBox, MailboxLoginError, MailBoxStartTls

    context = ssl.create_default_context(cafile=cafile)
    try:
        box = (
            MailBoxStartTls(url.host, url.port, ssl_context=context)
            if starttls
            else MailBox(url.host, url.port, ssl_context=context)
        )
        box.login(url.user, password, initial_folder=None)
    except MailboxLoginError:
        raise SourceError(f"IMAP login refused for {url.user}@{url.host}") from None
    except (OSError, ssl.SSLError) as error:
        raise SourceError(f"cannot reach IMAP server {url.host}:{url.port}: {error}") from None
    try:
        try:
            box.folder.set(url.folder)
        except Exception:
            raise SourceError(f"IMAP folder {url.folder!r} not found") from None
        status = box.folder.status(url.folder, ["UIDVALIDITY"])
        uidvalidity = int(status["UIDVALIDITY"])
        after = state.last_uid(url.account, uidvalidity)
        criteria = AND(uid=f"{after + 1}:*", date_gte=since) if since else AND(uid=f"{after + 1}:*")
        uids = sorted(int(uid) for uid in box.uids(criteria) if int(uid) > after)  # "N:*" includes the last
        count(len(uids))
        for uid in uids:
            label = f"imap:{url.folder}/uid {uid}"
            # BODY.PEEK: the bytes as stored, and no \\Seen flag until the service accepted them.
            kind, data = box.client.uid("FETCH", str(uid), "(BODY.PEEK[])")
            raw = next((part[1] for part in data or [] if isinstance(part, tuple) and len(part) > 1), None)
            if kind != "OK" or not isinstance(raw, bytes):
                yield RawEmail(label, None, "vanished from the folder while ingesting")
                continue

            def accepted(uid: int = uid) -> None:
                if mark_seen:
                    box.flag(str(uid), "\\Seen", True)
                state.accept(url.account, uidvalidity, uid)

            yield RawEmail(label, raw, accepted=accepted)
    finally:
        with contextlib.suppress(Exception):
            box.logout()
