"""A bare ``limen start`` (no Git): the preset roles let a newcomer in at once, a user with
only ``access`` replays and lists their own recorded sessions and is refused (403, audited)
another user's; and one ``limen start`` per data directory."""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
from typing import Any

import pytest
import yaml

from .cluster import ClusterFactory, LimenCluster, LimenUser, command, describe, run, wait_for

LOGIN = getpass.getuser()
HOST = socket.gethostname().split(".")[0].lower()
DEADLINE = 20.0


@pytest.fixture(scope="module")
def bare(module_clusters: ClusterFactory) -> LimenCluster:
    return module_clusters("bare")  # no --gitops, nothing applied: only the presets


@pytest.fixture(scope="module")
def me(bare: LimenCluster) -> LimenUser:
    # the README's first user, on a cluster nobody configured
    link = bare.lmctl("users", "add", "me", "--roles", "access", "--logins", LOGIN)
    assert "/web/signup/" in link.stdout, describe(link)
    user = bare.user("me")
    url = next(word for word in link.stdout.split() if "/web/signup/" in word)
    user.signup(url)
    user.login()
    return user


@pytest.fixture(scope="module")
def ana(bare: LimenCluster) -> LimenUser:
    user = bare.signed_up_user("ana", roles=["access"], logins=[LOGIN])
    user.login()
    return user


def _recorded_session(site: LimenCluster, user: LimenUser, marker: str) -> str:
    """Run a recorded PTY session as ``user``; its session id once its recording is stored."""
    wait_for(lambda: any(n["hostname"] == HOST for n in json.loads(
        user.lmsh("ls", "-o", "json").stdout)["items"]), DEADLINE, "the node in lmsh ls")
    result = run([command("lmsh"), "ssh", "-tt", f"{LOGIN}@{HOST}", f"echo {marker}"],
                 env=user.env)
    assert marker in result.stdout, describe(result)
    ended = wait_for(lambda: [e for e in site.audit("session.end", user=user.name)
                              if e.get("recorded")], DEADLINE, f"{user.name}'s session.end")
    session_id = str(ended[-1]["session_id"])
    recordings = site.data_dir / "log" / "recordings"
    wait_for(lambda: (recordings / f"{session_id}.cast").exists(), DEADLINE,
             f"the recording of {session_id}")
    return session_id


@pytest.fixture(scope="module")
def sessions(bare: LimenCluster, me: LimenUser, ana: LimenUser) -> dict[str, str]:
    return {"me": _recorded_session(bare, me, "marker-of-me"),
            "ana": _recorded_session(bare, ana, "marker-of-ana")}


def _listed(user: LimenUser) -> list[dict[str, Any]]:
    return list(json.loads(user.lmsh("recordings", "ls", "-o", "json").stdout)["items"])


def test_presets_exist_on_a_bare_start_and_the_first_user_gets_in(
        bare: LimenCluster, me: LimenUser) -> None:
    roles = bare.lmctl_json("get", "roles")["items"]
    assert {r["metadata"]["name"]: r["metadata"]["labels"]["limen.dev/origin"]
            for r in roles} == {"access": "preset", "editor": "preset", "auditor": "preset"}
    status = me.status()
    assert status["roles"] == ["access"]
    assert status["logins"] == [LOGIN]


def test_access_replays_its_own_session(me: LimenUser, sessions: dict[str, str]) -> None:
    replay = me.lmsh("play", sessions["me"], "-o", "text")
    assert "marker-of-me" in replay.stdout
    as_json = json.loads(me.lmsh("play", sessions["me"], "--format", "json").stdout)
    assert as_json["header"]["limen"]["user"] == "me"
    as_yaml = yaml.safe_load(me.lmsh("play", sessions["me"], "-o", "yaml").stdout)
    assert as_yaml["events"] == as_json["events"]


def test_access_is_refused_another_users_session_and_audited(
        bare: LimenCluster, me: LimenUser, sessions: dict[str, str]) -> None:
    refused = me.lmsh("play", sessions["ana"], "-o", "text", check=False)
    assert refused.returncode != 0, describe(refused)
    assert "marker-of-ana" not in refused.stdout
    assert refused.stderr.startswith("error: me may not read session "), describe(refused)
    assert "Traceback" not in refused.stderr
    denied = wait_for(lambda: [e for e in bare.audit("access.denied", user="me")
                               if e.get("session_id") == sessions["ana"]], DEADLINE,
                      "the audited refusal")
    assert denied[-1]["action"] == "recording.read"
    assert denied[-1]["success"] is False
    assert "contains(session.participants, user.metadata.name)" in denied[-1]["reason"]


def test_recordings_ls_lists_only_own_sessions(bare: LimenCluster, me: LimenUser,
                                               ana: LimenUser, sessions: dict[str, str]) -> None:
    mine = _listed(me)
    assert [r["session_id"] for r in mine] == [sessions["me"]]
    assert (mine[0]["user"], mine[0]["login"], mine[0]["node"]) == ("me", LOGIN, HOST)
    assert mine[0]["participants"] == ["me"]
    sidecar = bare.data_dir / "log" / "recordings" / f"{sessions['me']}.json"
    assert json.loads(sidecar.read_text())["participants"] == ["me"]  # stored by the node
    assert mine[0]["duration_seconds"] is not None
    assert [r["session_id"] for r in _listed(ana)] == [sessions["ana"]]
    table = me.lmsh("recordings", "ls").stdout.splitlines()
    assert table[0].split() == ["SESSION", "USER", "NODE", "LOGIN", "STARTED", "DURATION"]
    assert len(table) == 2
    assert table[1].startswith(sessions["me"])
    as_yaml = me.lmsh("recordings", "ls", "-o", "yaml").stdout  # a YAML stream, as lmctl get
    assert [doc for doc in yaml.safe_load_all(as_yaml) if doc] == mine


def test_auditor_lists_everyone_newest_first(bare: LimenCluster,
                                             sessions: dict[str, str]) -> None:
    audrey = bare.signed_up_user("audrey", roles=["auditor"])
    audrey.login()
    assert [r["session_id"] for r in _listed(audrey)] == [sessions["ana"], sessions["me"]]
    assert "marker-of-me" in audrey.lmsh("play", sessions["me"], "-o", "text").stdout


def test_no_session_rule_is_a_403_for_the_listing_and_audited(
        bare: LimenCluster, sessions: dict[str, str]) -> None:
    eddie = bare.signed_up_user("eddie", roles=["editor"])
    eddie.login()
    refused = eddie.lmsh("recordings", "ls", check=False)
    assert refused.returncode != 0, describe(refused)
    assert refused.stderr.startswith("error: eddie may not list session recordings: "), \
        describe(refused)
    denied = wait_for(lambda: [e for e in bare.audit("access.denied", user="eddie")
                               if e.get("action") == "recording.list"], DEADLINE,
                      "the audited refusal of the listing")
    assert "no role allows list on session" in denied[-1]["reason"]
    played = eddie.lmsh("play", sessions["me"], "-o", "text", check=False)
    assert played.returncode != 0, describe(played)


def test_a_second_start_on_the_same_data_directory_is_refused(bare: LimenCluster) -> None:
    assert bare.process is not None
    before = bare.listeners_path.read_bytes(), bare.listeners_path.stat().st_mtime_ns
    second = subprocess.run(
        [command("limen"), "start", "--data-dir", str(bare.data_dir), "--random-ports",
         "--cluster-name", "bare"], env=bare.env, capture_output=True, text=True,
        timeout=30, check=False, stdin=subprocess.DEVNULL)
    assert second.returncode != 0, describe(second)
    assert second.stderr.strip() == (f"error: another limen process (pid {bare.process.pid}) "
                                     f"is using {bare.data_dir}"), describe(second)
    assert bare.running
    assert (bare.listeners_path.read_bytes(), bare.listeners_path.stat().st_mtime_ns) == before
    assert (bare.data_dir / "limen.lock").read_text().strip() == str(bare.process.pid)
    # lmctl reads the running cluster meanwhile
    assert bare.status()["listeners"] == bare.listeners
