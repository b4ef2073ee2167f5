"""What ``lmsh status`` and ``lmsh login`` print about a profile: who, which roles and logins,
the traits its certificate carries, until when.

A module of its own so that ``lmsh login`` does not load what ``lmsh logout`` needs (the
kubeconfig, app and database profile code: a fifth of the login's imports).
"""

from __future__ import annotations

import click

from limen.client.profile import Profile, ProfileStore
from limen.errors import LimenError

__all__ = ["print_profile", "profile_traits"]


def profile_traits(profile: Profile) -> dict[str, list[str]]:
    """The traits the profile's certificate carries (a single sign-on user's claims, read in
    roles as ``external.NAME``); empty when the certificate cannot be read."""
    from cryptography import x509

    from limen.ca.x509_certs import identity_from_cert

    try:
        path = ProfileStore().tls_cert_path(profile.proxy, profile.user)
        identity = identity_from_cert(x509.load_pem_x509_certificate(path.read_bytes()))
    except (OSError, ValueError, LimenError):
        return {}
    return {} if identity is None else {k: list(v) for k, v in sorted(identity.traits.items())}


def print_profile(profile: Profile) -> None:
    valid = "valid" if profile.is_valid() else "EXPIRED"
    traits = "; ".join(f"{k}={','.join(v)}" for k, v in profile_traits(profile).items())
    click.echo(f"> Profile URL: https://{profile.proxy}\n"
               f"  Logged in as: {profile.user}\n"
               f"  Cluster:      {profile.cluster}\n"
               f"  Roles:        {', '.join(profile.roles) or '-'}\n"
               f"  Logins:       {', '.join(profile.logins) or '-'}\n"
               + (f"  Traits:       {traits}\n" if traits else "")
               + f"  Valid until:  {profile.expires} [{valid}]")
