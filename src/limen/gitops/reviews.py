"""Access request reviews merged in Git: the reviewer is whoever merged the review document.

::

    reviews/<id>.yaml in the applied revision (kind AccessRequestReview)
        │ parse_review                       malformed ─────────────────┐
        ▼                                                               │
    merge_of: the first-parent commit that last added/changed the file  │
        │ merge commit → its author; a direct commit → its committer    │
        ▼                                                               │
    the Limen User whose name is that e-mail, or whose ``emails`` trait │
        lists it (case-insensitive, exactly one user)   none/several ───┤
        ▼                                                               ▼
    AccessRequests.review(that user, request, APPROVED|DENIED,      refused: audited
        commit=sha)   ← the same rules as ``lmsh request review``:   (access_request.review,
        review_requests from the User record's roles, no self-review, success false, via git)
        PENDING only, expiry; audited (via: git, commit)

Each review document is decided once: its outcome is kept by ``(file, commit)`` in the sync
status (``reviews``), so a later sync or a restart neither reviews nor audits it again; a
request that already records the commit is left as is as well. A document changed by a new
commit is a new decision (its merger is the new reviewer). A refused review never stops the
sync: the other documents were applied already, and the refusal is named in the status with
its reason. Reviews run after the revision's objects were applied (a rejected revision
applies nothing, reviews included).

Trust: whoever can push to the synced branch can also change roles, and Git identities are
not authenticated (anyone can write any author): the branch protection of the forge (who may
merge) is what makes the merger's identity meaningful. With ``gitops.review_signers_file``
the merge commit must also carry a good SSH signature by a key that file lists for the
merger's e-mail (``git verify-commit``'s check), so the identity cannot be written by another.
Called by ``limen.gitops.sync``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import git

from limen.api.access_request_review import ReviewDocument, is_review, parse_review
from limen.api.loader import SourceDocument
from limen.api.resources import Kind, Resource
from limen.auth.core import AuthServer
from limen.ca.identity import Identity
from limen.errors import AccessDenied, BadParameter, LimenError, NotFound, ValidationFailed
from limen.gitops.repository import Revision
from limen.gitops.review_merge import Merge
from limen.gitops.status import ReviewOutcome

__all__ = ["EMAIL_TRAIT", "MergeLookup", "ReviewOutcome", "apply_reviews", "user_of_email"]

log = logging.getLogger(__name__)

EMAIL_TRAIT = "emails"
"""The User trait listing a person's Git e-mail addresses."""
EVENT = "access_request.review"

_DECISIVE = (AccessDenied, BadParameter, NotFound)
"""Refusals that decide a review; any other error (the store unreachable, a request that kept
changing) is raised, and the review is tried again at the next sync."""

MergeLookup = Callable[[Revision, str, str], Merge]
"""The source's ``merge_of(revision, file, signers_file)`` (blocking: run in a worker
thread)."""


def user_of_email(users: Iterable[Resource], email: str) -> str:
    """The one User whose name is ``email`` or whose ``emails`` trait lists it (exact match,
    case-insensitive); ``NotFound`` for none, ``BadParameter`` for several."""
    wanted = email.strip().casefold()
    if not wanted:
        raise NotFound("the commit has no e-mail address")
    matches = []
    for user in users:
        traits = user.spec.get("traits")
        listed = traits.get(EMAIL_TRAIT) if isinstance(traits, dict) else None
        emails = [e for e in listed if isinstance(e, str)] if isinstance(listed, list) else []
        if user.name.casefold() == wanted or any(e.strip().casefold() == wanted for e in emails):
            matches.append(user.name)
    if not matches:
        raise NotFound(f"no Limen user has the e-mail address {email!r} (as name or in the "
                       f"{EMAIL_TRAIT!r} trait)")
    if len(matches) > 1:
        raise BadParameter(f"the e-mail address {email!r} belongs to several users "
                           f"({', '.join(sorted(matches))}): refused")
    return matches[0]


async def apply_reviews(auth: AuthServer, documents: Sequence[SourceDocument],
                        revision: Revision, merge_of: MergeLookup | None,
                        known: Sequence[ReviewOutcome], *,
                        signers_file: str = "") -> list[ReviewOutcome]:
    """Decide the review documents of ``revision`` not decided before (``known``); return
    the outcomes of every review document present (known ones kept as they were).
    ``signers_file``: ``gitops.review_signers_file`` (the merge commit must be signed by the
    merger's key)."""
    by_key = {o.key: o for o in known}
    outcomes: list[ReviewOutcome] = []
    for doc in documents:
        if not is_review(doc):
            continue
        file = f"{doc.source}[{doc.index}]"
        try:
            if merge_of is None:
                raise BadParameter("reviews need a Git source: the reviewer is who merged "
                                   "the commit (this source is a directory)")
            merge = await asyncio.to_thread(_merge, merge_of, revision, doc.source,
                                            signers_file)
        except (LimenError, OSError, ValueError, git.GitError, git.exc.ODBError) as err:
            merge = None
            failure: str | None = str(err)
        else:
            failure = None
        commit = merge.sha if merge is not None else revision.sha
        previous = by_key.get((file, commit))
        if previous is not None:
            outcomes.append(previous)
            continue
        outcome = await _decide(auth, doc, file, commit, merge, failure, bool(signers_file))
        if outcome.ok:
            log.info("gitops: %s", outcome.describe())
        else:
            log.warning("gitops: %s", outcome.describe())
        outcomes.append(outcome)
    return outcomes


def _merge(merge_of: MergeLookup, revision: Revision, name: str, signers_file: str) -> Merge:
    """``merge_of``, once the allowed signers file (when configured) is known to exist."""
    if signers_file and not Path(signers_file).is_file():
        raise NotFound(f"the allowed signers file {signers_file} (gitops.review_signers_file) "
                       "does not exist")
    return merge_of(revision, name, signers_file)


async def _decide(auth: AuthServer, doc: SourceDocument, file: str, commit: str,
                  merge: Merge | None, failure: str | None, signed: bool) -> ReviewOutcome:
    merger = merge.who if merge is not None else ""
    review: ReviewDocument | None = None
    user = ""
    try:
        review = parse_review(doc)
        if merge is None:
            raise BadParameter(f"cannot tell who merged {doc.source}: {failure}")
        if signed:
            _check_signature(merge)
        user = user_of_email(await auth.store.list(Kind.USER), merge.email)
    except ValidationFailed as err:
        return await _refused(auth, file, commit, merger, review, user,
                              "malformed review: " + "; ".join(str(e) for e in err.errors))
    except _DECISIVE as err:
        return await _refused(auth, file, commit, merger, review, user, str(err))
    identity = Identity(username=user, cluster=auth.cluster_name)
    try:  # audited by review(), refusals included (via git, commit)
        request = await auth.access_requests.review(identity, review.request_id, review.approve,
                                                    review.reason, commit=commit)
    except _DECISIVE as err:
        return _outcome(file, commit, False, review, merger, user, str(err))
    recorded = next((r for r in request.reviews if r.commit == commit), None)
    return _outcome(file, commit, True, review, merger,
                    recorded.author if recorded is not None else user, "")


def _check_signature(merge: Merge) -> None:
    """With ``gitops.review_signers_file``: the commit's good signature is the merger's."""
    if not merge.signer:
        raise AccessDenied(f"commit {merge.sha[:12]} that merged the review has no good SSH "
                           "signature by a key of the allowed signers file "
                           "(gitops.review_signers_file)")
    if merge.signer.casefold() != merge.email.strip().casefold():
        raise AccessDenied(f"commit {merge.sha[:12]} is signed by {merge.signer}'s key, but "
                           f"names {merge.email} as who merged it")


async def _refused(auth: AuthServer, file: str, commit: str, merger: str,
                   review: ReviewDocument | None, user: str, reason: str) -> ReviewOutcome:
    """A review refused before it reached the request: audited here."""
    await auth.emit(EVENT, success=False, user=user or None, via="git", commit=commit,
                    file=file, merger=merger,
                    request_id=review.request_id if review is not None else "",
                    state=("APPROVED" if review.approve else "DENIED") if review else "",
                    reason=reason)
    return _outcome(file, commit, False, review, merger, user, reason)


def _outcome(file: str, commit: str, ok: bool, review: ReviewDocument | None, merger: str,
             user: str, reason: str) -> ReviewOutcome:
    return ReviewOutcome(
        file, commit, ok, review.request_id if review is not None else "",
        ("APPROVED" if review.approve else "DENIED") if review is not None else "",
        merger, user, reason)
