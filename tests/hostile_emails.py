"""Hostile raw e-mails, made in code (the big ones would bloat the repository): each with the answer
a robust service gives. Used by the API test (4xx or 202, never a 500) and the ingest test."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from bench.tldr_email import tldr_email

HEAD = (
    b"From: Some Letter <news@example.com>\r\nTo: reader@example.com\r\nSubject: hostile\r\n"
    b"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
)


@dataclass(frozen=True)
class HostileEmail:
    name: str
    raw: bytes
    status: int  # what POST /v1/emails answers
    says: str = ""  # in the error message, for a 4xx


def _many_parts(count: int) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % index for index in range(count))
    return HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"


def _deep_nesting(depth: int) -> bytes:
    opening = b"".join(
        b'--b%d\r\nContent-Type: multipart/mixed; boundary="b%d"\r\n\r\n' % (level, level + 1)
        for level in range(depth)
    )
    return HEAD + b'Content-Type: multipart/mixed; boundary="b0"\r\n\r\n' + opening + b"--b%d\r\n" % depth


def _with_attachment(size: int) -> bytes:
    data = base64.encodebytes(b"\0" * size)
    return (
        HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n'
        b"See the attachment.\r\n--b\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment;"
        b' filename="big.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n' + data + b"--b--\r\n"
    )


def hostile_emails(max_email_bytes: int) -> list[HostileEmail]:
    newsletter = tldr_email()
    html = newsletter.split(b"<html>", 1)[1].split(b"</html>", 1)[0]
    return [
        HostileEmail("10000-parts", _many_parts(10_000), 422, "more than 500 MIME parts"),
        HostileEmail("nested-2000-deep", _deep_nesting(2000), 422, "MIME parts"),
        HostileEmail("attachment-over-the-limit", _with_attachment(max_email_bytes), 413, "bytes"),
        HostileEmail(
            "missing-closing-boundary",
            HEAD
            + b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\nContent-Type: text/html\r\n'
            b"\r\n<html>" + html + b"</html>\r\n",
            202,
        ),
        HostileEmail(
            "no-boundary-parameter",
            HEAD
            + b"Content-Type: multipart/alternative\r\n\r\n<p><b>A title line</b></p><p>Some text.</p>\r\n",
            422,
            "no text/html or text/plain part",
        ),
        HostileEmail(
            "header-injection",
            b"From: x@example.com\r\nSubject: =?utf-8?b?"
            + base64.b64encode(b"Hi\r\nBcc: victim@example.com\r\n\x00\xe2\x80\xae evil")
            + b"?=\r\nMessage-ID: <inject@x>\r\n\r\n**A title**\r\n\r\nSome text here.\r\n",
            202,
        ),
        HostileEmail(
            "bad-encoded-words",
            b"From: =?x-unknown?q?Who=20knows?= <a@example.com>\r\nSubject: =?utf-8?b?!!!not-base64?= and"
            b" =?utf-8?q?=FF=FE?=\r\n\r\nJust one paragraph of text.\r\n",
            202,
        ),
        HostileEmail(
            "unknown-charset",
            HEAD + b"Content-Type: text/plain; charset=x-made-up\r\n\r\nCaf\xe9 news: a paragraph.\r\n",
            202,
        ),
        HostileEmail(
            "wrong-charset",
            HEAD + b"Content-Type: text/html; charset=utf-8\r\n\r\n"
            b"<h2>Caf\xe9 opens</h2><p>Na\xefve text.</p>\r\n",
            202,
        ),
        HostileEmail("no-body", HEAD + b"\r\n", 422, "no text/html or text/plain part"),
        HostileEmail("headers-only-no-separator", b"Subject: nothing else", 422, "no text/html"),
        HostileEmail("png-bytes", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, 422, "no header lines"),
        HostileEmail(
            "only-an-attachment",
            HEAD + b"Content-Type: application/zip\r\nContent-Disposition: attachment\r\n\r\nUEsDBA==\r\n",
            422,
            "no text/html or text/plain part",
        ),
    ]
