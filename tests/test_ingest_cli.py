"""`enhancer ingest`: .eml files, directories, mbox, Maildir and a real IMAP server (Dovecot), into
a running service (--url) or the database (--local); re-runs create nothing twice."""

from __future__ import annotations

import mailbox
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, TEST_API_KEY
from tests.mail_factory import numbered_tldr_email


def _ingest(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "ingest", "--quiet", *args],
        cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _summary(output: str) -> dict[str, int]:
    counts = {}
    for line in output.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            counts[name.strip()] = int(value)
    return counts


def _stored(env: dict[str, str]) -> tuple[int, int, int]:
    """(e-mails, items, jobs) in the service's database."""
    from sqlalchemy import func, select

    from app.core.db import reset_caches, session_scope
    from app.models import Email, Item, Job

    reset_caches()
    with session_scope() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) or 0 for t in (Email, Item, Job))  # type: ignore[return-value]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def api_url(service_env):  # type: ignore[no-untyped-def]
    """The API (no worker) as its own uvicorn process: --url ingests over real HTTP."""
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--port", str(port)],
        cwd=REPO_ROOT, env={**os.environ, **service_env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    server.stderr.read().decode() if server.stderr else "uvicorn died"
                ) from None
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=20)


def test_an_mbox_ingested_twice_creates_no_new_jobs(service_env, api_url, tmp_path: Path) -> None:
    box = mailbox.mbox(tmp_path / "newsletters.mbox")
    for number in range(3):
        box.add(numbered_tldr_email(number))
    box.add(b"Subject: a picture\nContent-Type: image/png\n\nAAAA")  # reported and skipped
    box.flush()
    env = {**service_env, "ENHANCER_API_KEY": TEST_API_KEY}

    first = _ingest(env, str(tmp_path / "newsletters.mbox"), "--url", api_url)
    assert first.returncode == 1, first.stderr  # one failure: the run went on past it
    counts = _summary(first.stdout)
    assert counts["e-mails read"] == 4 and counts["stories"] == 6 and counts["new jobs"] == 6
    assert counts["failures"] == 1 and "no text/html or text/plain part" in first.stdout

    second = _ingest(env, str(tmp_path / "newsletters.mbox"), "--url", api_url)
    counts = _summary(second.stdout)
    assert counts["new jobs"] == 0 and counts["duplicates skipped (already ingested)"] == 3
    assert _stored(service_env) == (3, 6, 6)


def test_eml_files_directories_and_maildirs_go_in_locally(service_env, tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "a.eml").write_bytes(numbered_tldr_email(1))
    (tmp_path / "in" / "sub" / "b.eml").write_bytes(numbered_tldr_email(2))
    maildir = mailbox.Maildir(tmp_path / "in" / "Maildir", create=True)
    maildir.add(numbered_tldr_email(3))
    maildir.add(numbered_tldr_email(1))  # the same e-mail as a.eml
    single = tmp_path / "c.eml"
    single.write_bytes(numbered_tldr_email(4))

    result = _ingest(service_env, str(tmp_path / "in"), str(single), "--local")
    assert result.returncode == 0, result.stdout + result.stderr
    counts = _summary(result.stdout)
    assert counts["e-mails read"] == 5 and counts["new jobs"] == 8
    assert counts["duplicates skipped (already ingested)"] == 1
    assert _stored(service_env) == (4, 8, 8)
    missing = _ingest(service_env, str(tmp_path / "nowhere"), "--local")
    assert missing.returncode == 1 and "no such file or directory" in missing.stderr


def test_imap_ingest_killed_mid_folder_resumes_and_ingests_each_email_once(
    service_env, imap_server, tmp_path: Path
) -> None:
    total = 60
    for number in range(total):
        imap_server.append("Newsletters", numbered_tldr_email(number))
    url = f"imap://{imap_server.user}@127.0.0.1:{imap_server.imaps_port}/Newsletters"
    env = {**service_env, "ENHANCER_IMAP_PASSWORD": imap_server.password}
    command = [sys.executable, "-m", "app.cli", "ingest", "--quiet", url, "--local", "--mark-seen",
               "--cafile", imap_server.cafile]  # fmt: skip
    state = Path(service_env["ENHANCER_DATA_DIR"]) / "ingest-state.json"
    run = subprocess.Popen(
        command, cwd=REPO_ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (state.exists() and '"last_uid": 5' in state.read_text()) and run.poll() is None:
        assert time.monotonic() < deadline, "the ingester never got to the fifth e-mail"
        time.sleep(0.005)
    run.kill()  # mid-folder, as a crash would
    run.wait()
    assert run.returncode == -signal.SIGKILL, "the ingester finished before it could be killed"
    stored_before, _, _ = _stored(service_env)
    assert 5 <= stored_before < total

    again = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout + again.stderr
    counts = _summary(again.stdout)
    assert counts["e-mails read"] <= total - 5  # resumed after the last accepted UID
    assert counts["duplicates skipped (already ingested)"] <= 1  # at most the one in flight at the kill
    assert _stored(service_env) == (total, 2 * total, 2 * total)  # every e-mail exactly once

    client = imap_server.connect()
    client.select('"Newsletters"', readonly=True)
    assert client.search(None, "UNSEEN")[1] == [b""]  # --mark-seen flagged every accepted e-mail
    client.logout()
    rerun = subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **env}, capture_output=True, text=True)
    assert _summary(rerun.stdout)["e-mails read"] == 0


def test_imap_secrets_stay_out_of_urls_and_a_wrong_password_is_reported(service_env, imap_server) -> None:
    base = f"127.0.0.1:{imap_server.imaps_port}/INBOX"
    in_url = _ingest(service_env, f"imap://{imap_server.user}:pw@{base}", "--local")
    assert in_url.returncode == 1 and "put no password in the URL" in in_url.stderr
    wrong = _ingest(
        {**service_env, "ENHANCER_IMAP_PASSWORD": "wrong"},
        f"imap://{imap_server.user}@{base}", "--local", "--cafile", imap_server.cafile,
    )  # fmt: skip
    assert wrong.returncode == 1 and "IMAP login refused" in wrong.stderr
    assert "wrong" not in wrong.stdout + wrong.stderr.replace("IMAP login refused", "")
