"""The CA rotation phase machine (limen.auth.rotation): every allowed and refused transition,
what each phase does to the keys, the stored form, and when auto mode moves on."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from limen.auth.rotation import (
    ALLOWED,
    Mode,
    Phase,
    RotationRefused,
    RotationState,
    advance,
    due_phase,
    key_fingerprint,
)
from limen.ca.authority import CertAuthority, CertAuthorityType
from limen.errors import BadParameter

NOW = datetime(2026, 1, 1, tzinfo=UTC)
USER = CertAuthorityType.USER


def _fps(ca: CertAuthority) -> list[str]:
    return [key_fingerprint(ca.type, p) for p in ca.key_pairs]


def _walk(ca: CertAuthority, *phases: Phase) -> tuple[CertAuthority, RotationState]:
    state = RotationState()
    for phase in phases:
        ca, state = advance(ca, state, phase, now=NOW)
    return ca, state


@pytest.fixture(scope="module")
def ca() -> CertAuthority:
    return CertAuthority.generate("unit", USER)


REACHING = {
    Phase.STANDBY: (),
    Phase.INIT: (Phase.INIT,),
    Phase.UPDATE_CLIENTS: (Phase.INIT, Phase.UPDATE_CLIENTS),
    Phase.UPDATE_SERVERS: (Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS),
    Phase.ROLLBACK: (Phase.INIT, Phase.ROLLBACK),
}


@pytest.mark.parametrize(("start", "target"),
                         [(s, t) for s in Phase for t in Phase],
                         ids=[f"{s.value}-{t.value}" for s in Phase for t in Phase])
def test_every_transition_allowed_or_refused(ca: CertAuthority, start: Phase,
                                             target: Phase) -> None:
    here, state = _walk(ca, *REACHING[start])
    assert state.phase is start
    if target in ALLOWED[start]:
        moved, after = advance(here, state, target, now=NOW)
        assert after.phase is target
        assert moved.has_private_key
    else:
        with pytest.raises(RotationRefused, match=f"may go to .*not {target.value}"):
            advance(here, state, target, now=NOW)


def test_full_rotation_keys(ca: CertAuthority) -> None:
    old = key_fingerprint(USER, ca.active)
    init, state = _walk(ca, Phase.INIT)
    new = state.new_key
    assert state.old_key == old
    assert new != old
    assert key_fingerprint(USER, init.active) == old  # init: the old key still signs
    assert _fps(init) == [old, new]  # and the new one is trusted
    assert init.additional_trusted[0].private_key is not None
    assert init.public_only().additional_trusted[0].private_key is None
    clients, state = advance(init, state, Phase.UPDATE_CLIENTS, now=NOW)
    assert _fps(clients) == [new, old]  # the new key signs, the old stays trusted
    servers, state = advance(clients, state, Phase.UPDATE_SERVERS, now=NOW)
    assert _fps(servers) == [new, old]
    done, state = advance(servers, state, Phase.STANDBY, now=NOW)
    assert _fps(done) == [new]  # the old key is dropped
    assert state.phase is Phase.STANDBY
    assert state.started is None


@pytest.mark.parametrize("from_phase", [Phase.INIT, Phase.UPDATE_CLIENTS, Phase.UPDATE_SERVERS])
def test_rollback_restores_the_old_key(ca: CertAuthority, from_phase: Phase) -> None:
    old = key_fingerprint(USER, ca.active)
    here, state = _walk(ca, *REACHING[from_phase])
    new = state.new_key
    back, state = advance(here, state, Phase.ROLLBACK, now=NOW)
    assert _fps(back) == [old, new]  # the old key signs, the new one still verifies
    assert back.active.private_key is not None
    assert back.additional_trusted[0].private_key is None
    done, state = advance(back, state, Phase.STANDBY, now=NOW)
    assert _fps(done) == [old]  # standby after rollback drops the new key
    assert done.active.private_key == ca.active.private_key


def test_state_round_trip_and_malformed() -> None:
    state = RotationState(Phase.UPDATE_CLIENTS, Mode.AUTO, timedelta(hours=24), NOW, NOW,
                          "SHA256:a", "SHA256:b")
    assert RotationState.from_dict(state.to_dict()) == state
    assert RotationState.from_dict(None) == RotationState()
    for bad in ({"phase": "sideways"}, {"phase": "init", "grace_period_seconds": -1}, "x",
                {"phase": "init", "started": "yesterday"}):
        with pytest.raises(BadParameter):
            RotationState.from_dict(bad)


def test_the_tls_ca_does_not_rotate() -> None:
    tls = CertAuthority.generate("unit", CertAuthorityType.TLS)
    with pytest.raises(RotationRefused, match="tls CA is not rotated by phases"):
        advance(tls, RotationState(), Phase.INIT, now=NOW)


def test_public_copy_cannot_rotate(ca: CertAuthority) -> None:
    with pytest.raises(RotationRefused, match="public-only"):
        advance(ca.public_only(), RotationState(), Phase.INIT, now=NOW)


def test_state_not_matching_keys_refused(ca: CertAuthority) -> None:
    _, state = _walk(ca, Phase.INIT)
    with pytest.raises(RotationRefused, match="no longer holds key"):
        advance(ca, state, Phase.UPDATE_CLIENTS, now=NOW)  # a CA without the new key


def test_auto_mode_moves_after_a_third_of_the_grace_period(ca: CertAuthority) -> None:
    here, state = advance(ca, RotationState(), Phase.INIT, now=NOW, mode=Mode.AUTO,
                          grace_period=timedelta(hours=3))
    assert state.mode is Mode.AUTO
    assert due_phase(state, NOW + timedelta(minutes=59)) is None
    assert due_phase(state, NOW + timedelta(hours=1)) is Phase.UPDATE_CLIENTS
    _, clients = advance(here, state, Phase.UPDATE_CLIENTS, now=NOW + timedelta(hours=1))
    assert clients.mode is Mode.AUTO  # kept after init
    assert due_phase(clients, NOW + timedelta(hours=2)) is Phase.UPDATE_SERVERS
    manual = RotationState(Phase.INIT, Mode.MANUAL, timedelta(0), NOW, NOW)
    assert due_phase(manual, NOW + timedelta(days=9)) is None
    assert due_phase(RotationState(mode=Mode.AUTO, phase_started=NOW), NOW
                     + timedelta(days=9)) is None  # standby stays
