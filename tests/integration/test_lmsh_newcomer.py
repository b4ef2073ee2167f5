"""What a newcomer following the README does with the real ``lmsh`` against a running
``limen start``: sign-up confirmed with the authenticator's code (QR code shown, a wrong code
refused and the link still usable), ``lmsh login`` again with no flags, ``lmsh login --ca-pin``
on a second machine, ``lmsh config --write`` into a missing ``~/.ssh``, and ``-o json|yaml`` on
the listings.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
import segno
import yaml

from .cluster import (
    TOTP_STEP,
    ClusterFactory,
    LimenCluster,
    LimenUser,
    command,
    describe,
    run,
    tree_modes,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "gitops"
PASSWORD = "a-newcomer's-long-password"


@pytest.fixture(scope="module")
def site(module_clusters: ClusterFactory) -> LimenCluster:
    cluster = module_clusters("newcomer")
    cluster.lmctl("apply", "-f", EXAMPLES)
    return cluster


def right_and_wrong_codes(secret: str) -> tuple[int, str, str]:
    """The current step, its code, and a code no step the server accepts now has."""
    totp, step = pyotp.TOTP(secret), int(time.time()) // TOTP_STEP
    accepted = {totp.at((step + s) * TOTP_STEP) for s in (-2, -1, 0, 1, 2)}
    wrong = next(c for c in (f"{n:06d}" for n in range(0, 1_000_000, 7919))
                 if c not in accepted)
    return step, totp.at(step * TOTP_STEP), wrong


def qr_block(uri: str) -> str:
    """The QR code of ``uri`` as segno draws it on a terminal."""
    buffer = io.StringIO()
    segno.make(uri, error="m").terminal(out=buffer, compact=True, border=2)
    return buffer.getvalue()


def audit_events(site: LimenCluster, event_type: str) -> list[dict[str, Any]]:
    """The events of one type in the cluster's audit log (JSON lines), oldest first."""
    lines = [line for path in sorted((site.data_dir / "log" / "events").glob("*.jsonl"))
             for line in path.read_text(encoding="utf-8").splitlines()]
    return [e for e in map(json.loads, lines) if e.get("event") == event_type]  # not checkpoints


def show_totp(user: LimenUser, link: str) -> dict[str, str]:
    answer: dict[str, str] = json.loads(
        user.lmsh("signup", "--link", link, "--show-totp", "-o", "json").stdout)
    return answer


# -- sign-up ---------------------------------------------------------------------------


def test_signup_shows_a_qr_code_and_asks_again_after_a_wrong_code(site: LimenCluster) -> None:
    sally = site.user("sally", password=PASSWORD)
    link = site.add_user("sally", roles=["dev"], logins=["sally"])["url"]
    enrolment = show_totp(sally, link)
    step, right, wrong = right_and_wrong_codes(enrolment["totp_secret"])
    audited = len(audit_events(site, "user.signup"))

    # The interactive path, with what a person types piped in: password, a wrong code, the
    # right code (shown again by --show-totp: the link keeps one secret until it is used).
    result = sally.lmsh("signup", "--link", link, "--password-stdin",
                        input=f"{PASSWORD}\n{wrong}\n{right}\n")

    assert qr_block(enrolment["totp_uri"]) in result.stdout, result.stdout
    assert f"secret: {enrolment['totp_secret']}" in result.stdout
    assert "That code is not right" in result.stdout
    assert result.stdout.rstrip().endswith(
        "Password set for sally and your authenticator app is enrolled.\n"
        f"Next: lmsh login --proxy {site.web} --user sally")
    sally.signed_up(link, enrolment["totp_secret"], step)
    assert sally.login().returncode == 0
    events = audit_events(site, "user.signup")[audited:]
    assert [(e["success"], e.get("reason")) for e in events] == [
        (False, "invalid one-time code"), (True, None)]


def test_a_wrong_code_leaves_the_link_usable_and_sets_nothing(site: LimenCluster) -> None:
    tom = site.user("tom", password=PASSWORD)
    link = site.add_user("tom", roles=["dev"], logins=["tom"])["url"]
    secret = show_totp(tom, link)["totp_secret"]
    step, right, wrong = right_and_wrong_codes(secret)

    refused = tom.lmsh("signup", "--link", link, "--password-stdin", "--otp", wrong,
                       "-o", "json", input=PASSWORD + "\n", check=False)
    no_code = tom.lmsh("signup", "--link", link, "--password-stdin", "-o", "json",
                       input=PASSWORD + "\n", check=False)

    assert refused.returncode == 1, describe(refused)
    assert refused.stderr.splitlines() == [
        "error: invalid one-time code: sign-up not finished (the link still works; check the "
        "clock of the device)"]
    assert no_code.returncode == 1, describe(no_code)
    assert no_code.stderr.splitlines()[-1] == (
        "error: no one-time code given: sign-up not finished (the link still works)")
    assert not tom.home.exists()  # nothing saved either (not even the CA)
    unset = tom.lmsh("login", "--proxy", site.web, "--user", "tom", "--password-stdin",
                     "--otp", right, "--ca-pin", site.status()["ca_fingerprints"]["tls"],
                     input=PASSWORD + "\n", check=False)
    assert unset.stderr.splitlines() == ["error: invalid password or one-time code"]
    done = tom.lmsh("signup", "--link", link, "--password-stdin", "--otp", right, "-o", "json",
                    input=PASSWORD + "\n")
    assert json.loads(done.stdout) == {
        "user": "tom", "totp_secret": secret,
        "totp_uri": show_totp_uri(secret, "tom", site.name)}
    tom.signed_up(link, secret, step)
    assert tom.login().returncode == 0


def show_totp_uri(secret: str, user: str, cluster: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user, issuer_name=cluster)


# -- login -----------------------------------------------------------------------------


def test_login_with_no_flags_logs_in_again_as_the_current_profile(site: LimenCluster) -> None:
    una = site.signed_up_user("una", roles=["dev"], logins=["una"])
    una.login()

    again = una.lmsh("login", "--password-stdin", "--otp", una.take_code(),
                     input=una.password + "\n")

    assert "Logged in as: una" in again.stdout, describe(again)
    assert f"> Profile URL: https://{site.web}" in again.stdout


def test_login_with_no_profile_and_no_proxy_says_what_to_pass(site: LimenCluster,
                                                              tmp_path: Path) -> None:
    stranger = LimenUser("nobody", tmp_path / "limen", site.web)
    result = stranger.lmsh("login", check=False)
    assert result.returncode == 1, describe(result)
    assert result.stderr.splitlines() == [
        "error: no saved profile to log in again: run lmsh login --proxy HOST:PORT --user NAME"]
    assert not stranger.home.exists()


def test_login_with_ca_pin_on_a_second_machine(site: LimenCluster, tmp_path: Path) -> None:
    vera = site.signed_up_user("vera", roles=["dev"], logins=["vera"])
    laptop = LimenUser("vera", tmp_path / "laptop", site.web, password=vera.password)
    pin = site.status()["ca_fingerprints"]["tls"]
    wrong_pin = "sha256:" + "ab" * 32
    code = vera.take_code()
    flags = ["--proxy", site.web, "--user", "vera", "--password-stdin", "--otp", code]

    plain = laptop.lmsh("login", *flags, input=vera.password + "\n", check=False)
    refused = laptop.lmsh("login", *flags, "--ca-pin", wrong_pin, input=vera.password + "\n",
                          check=False)

    assert plain.returncode == 3, describe(plain)
    assert plain.stderr.splitlines() == [
        f"error: the TLS certificate of the proxy {site.web} is signed by no CA this machine "
        "trusts: give the cluster's CA pin once with --ca-pin sha256:... (lmctl status shows "
        "it; sign-up links carry it)"]
    assert refused.returncode == 1, describe(refused)
    assert refused.stderr.splitlines() == [
        f"error: the proxy {site.web} presented a CA that does not match the pin {wrong_pin}; "
        "refusing to continue"]
    assert not laptop.home.exists()

    pinned = laptop.lmsh("login", *flags, "--ca-pin", pin, input=vera.password + "\n")

    assert "Logged in as: vera" in pinned.stdout, describe(pinned)
    assert (laptop.key_dir / "cas" / f"{site.name}.pem").exists()
    again = laptop.lmsh("login", "--password-stdin", "--otp", vera.take_code(),
                        input=vera.password + "\n")  # the saved CA: no pin, no --insecure
    assert "Logged in as: vera" in again.stdout, describe(again)


# -- lmsh config --write and the listings ------------------------------------------------


def test_config_write_creates_ssh_dir_and_is_idempotent(site: LimenCluster,
                                                        tmp_path: Path) -> None:
    wes = site.signed_up_user("wes", roles=["dev"], logins=["wes"])
    wes.login()
    home = tmp_path / "home"
    home.mkdir()
    env = {**wes.env, "HOME": str(home)}

    first = run([command("lmsh"), "config", "--write"], env=env)
    config = home / ".ssh" / "config"
    assert first.stdout == f"Wrote the Limen block for {site.web} to {config}; " \
                           f"try: ssh <node>.{site.name}\n"
    assert tree_modes(home / ".ssh") == {"./": 0o700, "config": 0o600}
    written = config.read_text()
    assert written.count(f"# BEGIN Limen {site.web}") == 1
    assert written.count(f"# END Limen {site.web}") == 1
    assert written.rstrip("\n").split("\n", 1)[1] == "\n".join(
        [*run([command("lmsh"), "config"], env=env).stdout.splitlines(), f"# END Limen {site.web}"])

    config.write_text("Host mine\n    User me\n\n" + written + "Host after\n    Port 2200\n")
    run([command("lmsh"), "config", "--write"], env=env)
    run([command("lmsh"), "config", "--write"], env=env)

    again = config.read_text()
    assert again == "Host mine\n    User me\n\n" + written + "Host after\n    Port 2200\n"
    resolved = run(["ssh", "-G", "-F", config, f"web1.{site.name}"], env=env).stdout
    proxy_command = [line for line in resolved.splitlines() if line.startswith("proxycommand ")]
    assert len(proxy_command) == 1, resolved
    assert f"/limen/client/proxyssh_main.py --proxy {site.web} --cluster {site.name}" \
        in proxy_command[0]
    assert "port 3022" in resolved.splitlines()


@pytest.fixture(scope="module")
def xena(site: LimenCluster) -> LimenUser:
    user = site.signed_up_user("xena", roles=["dev"], logins=["xena"])
    user.login()
    return user


def test_status_speaks_json_and_yaml(xena: LimenUser) -> None:
    as_json = json.loads(xena.lmsh("status", "-o", "json").stdout)
    assert as_json["user"] == "xena"
    assert yaml.safe_load(xena.lmsh("status", "-o", "yaml").stdout) == as_json


@pytest.mark.parametrize("listing", ["clusters", "ls"])
def test_listings_speak_json_and_yaml(xena: LimenUser, listing: str) -> None:
    as_json = json.loads(xena.lmsh(listing, "-o", "json").stdout)
    as_yaml = list(yaml.safe_load_all(xena.lmsh(listing, "-o", "yaml").stdout))
    assert as_json["kind"] == "List"
    assert as_yaml == as_json["items"]
