"""Observability of a real ``limen start`` (auth, proxy, node in one process, following a Git
repository, ``--diag-addr``, JSON logs): ``/metrics`` scraped before and after real flows,
parsed as Prometheus would, every named metric moving as it should: a login (and a refused
one), an ``ssh`` session through the proxy and the node's tunnel, a Git commit; ``/healthz``,
``/readyz``; the JSON log carries no password, one-time code or sign-up token. ``lmctl top
--once`` renders the same numbers."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitops_git import WorkTree, bare, role

from .cluster import ClusterFactory, LimenCluster, LimenUser, clean_env, command, run, wait_for
from .diag_scrape import Samples, readyz, scrape, total, value

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"


class JsonLogCluster(LimenCluster):
    """``limen start`` with ``LIMEN_LOG_FORMAT=json`` (``limen --log-format json``)."""

    @property
    def env(self) -> dict[str, str]:
        return clean_env(LIMEN_HOME=self.home, LIMEN_LOG_FORMAT="json")


@dataclass
class Site:
    cluster: LimenCluster
    repo: WorkTree
    user: LimenUser
    before_login: Samples

    @property
    def diag(self) -> str:
        return self.cluster.listeners["diag"]

    def scrape(self) -> Samples:
        return scrape(self.diag)


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory, tmp_path_factory: pytest.TempPathFactory) -> Site:
    root = tmp_path_factory.mktemp("observed")
    remote = bare(root / "access.git")
    repo = WorkTree(root / "work", remote)
    shutil.copy(EXAMPLES / "roles" / "ops.yaml", repo.path / "ops.yaml")
    repo.commit("ops")
    cluster = JsonLogCluster(root / "cluster", "observed", [
        "--gitops", f"file://{remote}", "--gitops-interval", "1s",
        "--diag-addr", "127.0.0.1:0"])
    module_clusters.clusters.append(cluster)  # stopped with the others
    cluster.start()
    user = cluster.signed_up_user("mia", roles=["ops"], logins=[LOGIN])
    before_login = scrape(cluster.listeners["diag"])
    user.login()  # one login per module: each further one waits for a new TOTP step
    return Site(cluster, repo, user, before_login)


def test_health_and_readiness(site: Site) -> None:
    status, body = wait_for(lambda: (answer := readyz(site.diag))[0] == 200 and answer,
                            15.0, "/readyz to answer 200")
    assert status == 200
    assert body.splitlines() == ["ready", "ok auth-backend", "ok auth-ca", "ok gitops",
                                 "ok proxy-auth", "ok proxy-listeners", "ok node-tunnel"]
    assert total(site.scrape(), "limen_tunnel_agents_connected") == 1


def test_a_login_counts_its_outcome_and_its_certificates(site: Site) -> None:
    before = site.before_login  # the module's login happened after it
    refused = site.user.login(password="not-the-password", otp="000000", check=False)
    assert refused.returncode != 0
    after = site.scrape()
    assert _moved(before, after, "limen_logins_total", outcome="success") == 1
    assert _moved(before, after, "limen_logins_total", outcome="failure") == 1
    assert _moved(before, after, "limen_certificates_issued_total", type="user") == 1
    assert _moved(before, after, "limen_audit_events_written_total", event="user.login",
                  outcome="success") == 1
    assert value(after, "limen_audit_write_failures_total") == 0
    assert total(after, "limen_backend_operation_seconds_count") > \
        total(before, "limen_backend_operation_seconds_count")


def test_an_ssh_session_counts_as_a_session_relayed_bytes_and_an_allowed_decision(
        site: Site) -> None:
    before = site.scrape()
    result = site.user.lmsh("ssh", f"{LOGIN}@{HOST}", "echo observed-output")
    assert result.stdout.strip() == "observed-output"

    def ended() -> Samples | None:
        now = site.scrape()
        return now if _moved(before, now, "limen_relayed_bytes_total", protocol="ssh",
                             direction="out") > 0 else None

    after = wait_for(ended, 15.0, "the session's end to be counted")
    assert _moved(before, after, "limen_sessions_total", protocol="ssh") == 1
    assert value(after, "limen_sessions_active", protocol="ssh") == 0
    assert _moved(before, after, "limen_rbac_decisions_total", kind="ssh",
                  decision="allowed") >= 1
    assert total(after, "limen_heartbeats_total") >= 1


def test_a_git_commit_moves_the_sync_metrics(site: Site) -> None:
    before = site.scrape()
    site.repo.write("extra.yaml", role("observed-extra", "nobody"))
    site.repo.commit("add a role")

    def applied() -> Samples | None:
        now = site.scrape()
        return now if _moved(before, now, "limen_gitops_syncs_total", result="applied") \
            else None

    after = wait_for(applied, 20.0, "the commit to be applied")
    assert value(after, "limen_gitops_last_applied_commit_timestamp_seconds") >= \
        value(before, "limen_gitops_last_applied_commit_timestamp_seconds")
    assert value(after, "limen_gitops_last_applied_commit_timestamp_seconds") > 1.7e9
    assert value(after, "limen_gitops_last_attempt_success") == 1
    assert value(after, "limen_gitops_last_attempt_timestamp_seconds") > \
        value(before, "limen_gitops_last_attempt_timestamp_seconds")
    assert _moved(before, after, "limen_gitops_sync_duration_seconds_count") >= 1


def test_the_json_log_carries_no_secret(site: Site) -> None:
    """The module's sign-up and login put a password and one-time codes in flight."""
    link = site.cluster.add_user("observed-newcomer", ["ops"])
    err = (site.cluster.root / "limen.err").read_text(encoding="utf-8")
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, err[:2000]
    assert all({"time", "level", "logger", "message"} <= set(r) for r in lines)
    assert site.user.password not in err
    assert site.user.last_code is not None
    assert f'"{site.user.last_code}"' not in err
    assert link["token"] not in err
    assert site.user.totp_secret is not None
    assert site.user.totp_secret not in err


def test_lmctl_top_once_shows_the_process(site: Site) -> None:
    result = run([command("lmctl"), "top", "--diag-addr", site.diag, "--once"],
                 env=clean_env())
    text = result.stdout
    assert f"limen {site.diag}" in text
    for heading in ("sessions", "tunnel agents", "logins", "git sync"):
        assert heading in text, text
    data = json.loads(run([command("lmctl"), "top", "--diag-addr", site.diag, "--once",
                           "-o", "json"], env=clean_env()).stdout)
    assert data["tunnel_agents"] == 1
    assert data["logins"]["success"] >= 1
    assert data["git_sync"]["last_attempt_ok"] is True


def test_lmctl_top_refreshes_until_interrupted(site: Site) -> None:
    top = subprocess.Popen([command("lmctl"), "top", "--diag-addr", site.diag, "--interval",
                            "0.2"], env=clean_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    try:
        assert top.stdout is not None
        os.set_blocking(top.stdout.fileno(), False)
        seen = bytearray()

        def frames() -> bool:
            seen.extend(top.stdout.read() or b"") if top.stdout else None
            return seen.decode().count(f"limen {site.diag}") >= 2

        wait_for(frames, 15.0, "two frames of lmctl top")
        top.send_signal(signal.SIGINT)
        assert top.wait(10) == 0
    finally:
        if top.poll() is None:
            top.kill()
            top.wait(10)
        for stream in (top.stdout, top.stderr):
            if stream is not None:
                stream.close()
    assert "refreshed every 0.2s" in seen.decode()


def _moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)
