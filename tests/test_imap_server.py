"""The imap_server fixture is a real Dovecot: TLS verified against its own CA, real logins, real mail."""

from __future__ import annotations

import imaplib
import ssl
from email.message import EmailMessage
from email.policy import SMTP

import imap_tools
import pytest

import tests.imap_server as imap_server_module
from tests.imap_server import ImapServer


def _message(subject: str, body: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Weekly AI <news@example.com>"
    message["To"] = "reader@example.com"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject.replace(' ', '-')}@example.com>"
    message.set_content(body)
    return message.as_bytes(policy=SMTP)  # CRLF line ends, as IMAP returns them


def _imaps(server: ImapServer, host: str | None = None) -> imaplib.IMAP4_SSL:
    """Not logged in; verified against the server's own CA."""
    return imaplib.IMAP4_SSL(host or server.host, server.imaps_port, ssl_context=server.ssl_context())


FIRST = _message("Issue 1", "Model releases this week.\n")
SECOND = _message("Issue 2", "Benchmarks and a new tokenizer.\n")


def test_imaps_login_append_search_fetch(imap_server: ImapServer) -> None:
    imap_server.append("Newsletters", FIRST)
    imap_server.append("Newsletters", SECOND, flags=("\\Seen",))

    with _imaps(imap_server) as client:
        assert client.login(imap_server.user, imap_server.password)[0] == "OK"
        assert client.select("Newsletters") == ("OK", [b"2"])
        assert client.search(None, "ALL") == ("OK", [b"1 2"])
        status, [uids] = client.uid("SEARCH", None, "ALL")
        assert status == "OK"
        first_uid, second_uid = uids.split()
        status, data = client.uid("FETCH", first_uid, "(FLAGS BODY.PEEK[])")
        assert status == "OK"
        assert data[0][1] == FIRST
        assert b"\\Seen" not in data[0][0]
        status, data = client.uid("FETCH", second_uid, "(FLAGS BODY.PEEK[])")
        assert data[0][1] == SECOND
        assert b"\\Seen" in data[0][0]
    assert imap_server.logins(at_least=3) == [(imap_server.user, True)] * 3  # two appends, this client


def test_certificate_is_verified(imap_server: ImapServer) -> None:
    """The CA in `cafile` is what makes the connection verify: the system's CAs do not."""
    with pytest.raises(ssl.SSLCertVerificationError):
        imaplib.IMAP4_SSL(imap_server.host, imap_server.imaps_port, ssl_context=ssl.create_default_context())
    with _imaps(imap_server, "localhost") as client:
        assert client.sock.getpeercert()["subject"] == ((("commonName", "localhost"),),)


def test_wrong_password_is_refused(imap_server: ImapServer) -> None:
    with _imaps(imap_server) as client, pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(imap_server.user, imap_server.password + "-wrong")
    assert imap_server.logins() == []


def test_starttls_on_the_plain_port(imap_server: ImapServer) -> None:
    with imaplib.IMAP4("localhost", imap_server.imap_port, timeout=10) as client:
        assert "STARTTLS" in client.capabilities
        assert client.starttls(ssl_context=imap_server.ssl_context())[0] == "OK"
        assert "STARTTLS" not in client.capabilities
        assert client.login(imap_server.user, imap_server.password)[0] == "OK"
        assert client.select("INBOX") == ("OK", [b"0"])
    assert imap_server.logins(at_least=1) == [(imap_server.user, True)]


def test_plaintext_login_over_loopback_shows_in_logins(imap_server: ImapServer) -> None:
    """Dovecot counts loopback as secured, so `ssl = required` lets this through: logins() tells."""
    with imaplib.IMAP4(imap_server.host, imap_server.imap_port, timeout=10) as client:
        assert client.login(imap_server.user, imap_server.password)[0] == "OK"
    assert imap_server.logins(at_least=1) == [(imap_server.user, False)]


def test_imap_tools_reads_the_fixture(imap_server: ImapServer) -> None:
    imap_server.append("Newsletters", FIRST)
    imap_server.append("Newsletters", SECOND)

    context = imap_server.ssl_context()
    with imap_tools.MailBox(imap_server.host, imap_server.imaps_port, ssl_context=context).login(
        imap_server.user, imap_server.password, initial_folder="Newsletters"
    ) as mailbox:
        messages = list(mailbox.fetch(mark_seen=False))
        assert [m.subject for m in messages] == ["Issue 1", "Issue 2"]
        assert messages[0].from_ == "news@example.com"
        assert messages[1].text == "Benchmarks and a new tokenizer.\r\n"
        assert sorted(f.name for f in mailbox.folder.list()) == ["INBOX", "Newsletters"]

    with imap_tools.MailBoxStartTls("localhost", imap_server.imap_port, ssl_context=context).login(
        imap_server.user, imap_server.password, initial_folder="Newsletters"
    ) as mailbox:
        assert [m.subject for m in mailbox.fetch(mark_seen=False)] == ["Issue 1", "Issue 2"]
    assert [tls for _, tls in imap_server.logins(at_least=4)] == [True] * 4


def test_missing_dovecot_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(imap_server_module, "DOVECOT_SBIN", "/nonexistent/dovecot")
    with pytest.raises(RuntimeError, match=r"scripts/install-system-deps\.sh"), ImapServer("u", "p"):
        pass
