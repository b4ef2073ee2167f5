"""GitOps credentials: where they come from, how they reach ``git``, and that they never show.

The end-to-end part serves a real repository over HTTP with ``git http-backend`` behind Basic
authentication, and fetches it with credentials from a file, from the environment and from the
URL: the fetch works, and the password is in no log line, error, status or Git config.
"""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gitops_git import GIT_ENV, WorkTree, bare, role
from limen.api.resources import Kind
from limen.auth.core import AuthServer
from limen.backend.memory import MemoryBackend
from limen.config import ClusterSettings, GitOpsSettings, Settings
from limen.errors import BadParameter, ConnectionProblem
from limen.events.emitter import MemoryEmitter
from limen.gitops.credentials import (
    ASKPASS_SCRIPT,
    TOKEN_USERNAME,
    Credentials,
    git_environment,
    load_credentials,
    redact_url,
    scrub_secrets,
    split_url_credentials,
)
from limen.gitops.repository import GitRepository
from limen.gitops.sync import GitOpsSync, Outcome

USER, PASSWORD = "sync-bot", "pa$$-w0rd-n0t-in-logs"


def test_redact_url_hides_passwords_and_keeps_user_names() -> None:
    assert redact_url("https://bot:s3cret@host/x.git") == "https://bot:***@host/x.git"
    assert redact_url("https://token@host/x.git") == "https://token@host/x.git"
    assert redact_url("fatal: unable to access 'http://a:b@h:1/r/': refused") == \
        "fatal: unable to access 'http://a:***@h:1/r/': refused"
    assert redact_url("/srv/repo.git") == "/srv/repo.git"


def test_url_credentials_are_taken_out_of_the_url() -> None:
    url, creds = split_url_credentials("https://bot:p%40ss@git.example.com:8443/a.git")
    assert url == "https://git.example.com:8443/a.git"
    assert creds == Credentials("bot", "p@ss")
    assert split_url_credentials("ssh://git@host/a.git") == ("ssh://git@host/a.git", None)
    assert scrub_secrets("auth failed for p@ss and p%40ss", Credentials("b", "p@ss").secrets) \
        == "auth failed for *** and ***"


def test_credentials_never_show_in_their_repr() -> None:
    assert PASSWORD not in repr(Credentials(USER, PASSWORD))
    assert PASSWORD not in str(Credentials(USER, PASSWORD))


def test_credentials_file_formats_and_precedence(tmp_path: Path) -> None:
    pair = tmp_path / "pair"
    pair.write_text(f"{USER}:{PASSWORD}\n", encoding="utf-8")
    token = tmp_path / "token"
    token.write_text("ghp_abcdef\n", encoding="utf-8")
    key = tmp_path / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n")
    env = {"LIMEN_GITOPS_USERNAME": "env-user", "LIMEN_GITOPS_PASSWORD": "env-pass"}
    from_url = Credentials("url-user", "url-pass")

    assert load_credentials(str(pair), env, from_url) == Credentials(USER, PASSWORD)
    assert load_credentials(str(token), {}) == Credentials(TOKEN_USERNAME, "ghp_abcdef")
    assert load_credentials(str(key), {}) == Credentials(ssh_key_file=str(key.resolve()))
    assert load_credentials("", env, from_url) == Credentials("env-user", "env-pass")
    assert load_credentials("", {"LIMEN_GITOPS_PASSWORD": "t"}) == Credentials(TOKEN_USERNAME, "t")
    assert load_credentials("", {}, from_url) == from_url
    assert load_credentials("", {}) is None
    with pytest.raises(BadParameter, match="LIMEN_GITOPS_PASSWORD is not"):
        load_credentials("", {"LIMEN_GITOPS_USERNAME": "u"})
    (tmp_path / "two").write_text("a:b\nc:d\n", encoding="utf-8")
    with pytest.raises(BadParameter, match="must hold one line"):
        load_credentials(str(tmp_path / "two"), {})
    with pytest.raises(BadParameter, match="cannot read the GitOps credentials file"):
        load_credentials(str(tmp_path / "missing"), {})


def test_git_environment_uses_askpass_without_writing_the_secret(tmp_path: Path) -> None:
    env = git_environment(Credentials(USER, PASSWORD), tmp_path / "gitops", env={})
    script = Path(env["GIT_ASKPASS"])
    assert script.read_text(encoding="utf-8") == ASKPASS_SCRIPT
    assert PASSWORD not in script.read_text(encoding="utf-8")
    assert script.stat().st_mode & 0o777 == 0o700
    assert env["GIT_TERMINAL_PROMPT"] == "0"
    assert (env["GIT_CONFIG_KEY_0"], env["GIT_CONFIG_VALUE_0"]) == ("credential.helper", "")
    answers = {prompt: subprocess.run([script, prompt], env={**os.environ, **env},
                                      capture_output=True, text=True, check=True).stdout
               for prompt in ("Username for 'https://h': ", "Password for 'https://u@h': ")}
    assert list(answers.values()) == [f"{USER}\n", f"{PASSWORD}\n"]

    anonymous = git_environment(None, tmp_path / "gitops", env={})
    assert "GIT_ASKPASS" not in anonymous
    assert anonymous["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"
    with_key = git_environment(Credentials(ssh_key_file="/k/id"), tmp_path, env={})
    assert with_key["GIT_SSH_COMMAND"].endswith("-i /k/id")


# -- a real HTTP remote behind Basic authentication ----------------------------------------

class _GitHttp(BaseHTTPRequestHandler):
    """Basic auth, then ``git http-backend`` as a CGI (the smart HTTP protocol)."""

    root: Path
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _handle(self) -> None:
        self.requests.append(self.headers.get("Authorization", ""))
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {**GIT_ENV, "GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1",
               "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_TYPE": self.headers.get("Content-Type", ""),
               "CONTENT_LENGTH": str(len(body)), "REMOTE_USER": USER,
               "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True, check=False, timeout=30).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
        status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
        self.send_response(status)
        for key, value in headers:
            if key.lower() != "status":
                self.send_header(key, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _handle


@pytest.fixture
def http_remote(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    repos = tmp_path / "served"
    remote = bare(repos / "access.git")
    work = WorkTree(tmp_path / "work", remote)
    work.write("roles/dev.yaml", role("dev", "alice"))
    work.commit("first")
    handler = type("Handler", (_GitHttp,), {"root": repos, "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/access.git", handler.requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _no_password_under(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_fetch_over_http_with_credentials_from_a_file(
        tmp_path: Path, http_remote: tuple[str, list[str]],
        caplog: pytest.LogCaptureFixture) -> None:
    url, requests = http_remote
    creds_file = tmp_path / "creds"
    creds_file.write_text(f"{USER}:{PASSWORD}\n", encoding="utf-8")
    caplog.set_level(logging.DEBUG)
    repo = GitRepository(url, "main", "", tmp_path / "sync", env={},
                         credentials=load_credentials(str(creds_file), {}))
    try:
        tip = repo.poll()
        assert [d.source for d in repo.documents(tip)] == ["roles/dev.yaml"]
    finally:
        repo.close()
    assert any(r.startswith("Basic ") for r in requests)  # the server did ask, and got them
    _no_password_under(tmp_path / "sync")
    assert PASSWORD not in caplog.text


def test_without_credentials_the_fetch_fails_quickly_without_a_prompt(
        tmp_path: Path, http_remote: tuple[str, list[str]]) -> None:
    url, _ = http_remote
    wrong = GitRepository(url, "main", "", tmp_path / "a", env={},
                          credentials=Credentials(USER, "wrong-" + PASSWORD))
    anonymous = GitRepository(url, "main", "", tmp_path / "b", env={})
    try:
        with pytest.raises(ConnectionProblem) as failed:
            wrong.poll()
        assert "Authentication failed" in str(failed.value)
        assert PASSWORD not in str(failed.value)
        with pytest.raises(ConnectionProblem, match="cannot fetch"):
            anonymous.poll()
    finally:
        wrong.close()
        anonymous.close()


async def test_the_sync_with_credentials_in_the_url_never_logs_or_stores_them(
        tmp_path: Path, http_remote: tuple[str, list[str]],
        caplog: pytest.LogCaptureFixture) -> None:
    url, _ = http_remote
    with_creds = url.replace("http://", f"http://{USER}:{PASSWORD.replace('$', '%24')}@")
    caplog.set_level(logging.DEBUG)
    emitter = MemoryEmitter()
    auth = AuthServer(MemoryBackend(), ClusterSettings(name="unit"), emitter)
    await auth.start()
    settings = Settings(data_dir=tmp_path / "data",
                        gitops=GitOpsSettings(source=with_creds, interval_seconds=1))
    sync = GitOpsSync(settings, auth, env={})
    try:
        report = await sync.sync_once()
        assert report.outcome is Outcome.APPLIED, report.errors
        assert await auth.store.find(Kind.ROLE, "dev") is not None

        wrong = Settings(data_dir=tmp_path / "data2", gitops=GitOpsSettings(
            source=with_creds.replace("n0t", "bad"), interval_seconds=1))
        failing = GitOpsSync(wrong, auth, env={})
        failed = await failing.sync_once()
        await failing.stop()
    finally:
        await sync.stop()
    assert failed.outcome is Outcome.FAILED
    assert "Authentication failed" in failed.errors[0]
    status = sync.status.to_dict()
    assert status["source"] == url.replace("http://", f"http://{USER}:***@")
    everything = caplog.text + repr(status) + repr(failing.status.to_dict()) + \
        repr([e.to_dict() for e in emitter.events])
    assert "***@" in everything
    for secret in (PASSWORD, PASSWORD.replace("$", "%24"), "pa$$-w0rd-bad-in-logs",
                   "pa%24%24-w0rd-bad-in-logs"):
        assert secret not in everything
    _no_password_under(tmp_path / "data")
    _no_password_under(tmp_path / "data2")
