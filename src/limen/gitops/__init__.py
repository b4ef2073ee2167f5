"""Limen's own Git sync: the access rules of a cluster, declared in a Git repository.

``limen start --gitops PATH_OR_URL`` runs :class:`GitOpsService`, which polls the repository
(:mod:`~limen.gitops.repository`, :mod:`~limen.gitops.source`), validates every document and
applies each new commit all or nothing (:mod:`~limen.gitops.sync`), recording the live commit
(:mod:`~limen.gitops.status`). ``lmctl gitops plan`` renders the same plan offline
(:mod:`~limen.gitops.planfmt`). Above ``limen.auth`` in the layers; below the CLIs.

Import the submodules directly: this package re-exports nothing, so that ``lmctl gitops plan``
does not load the sync service and the auth server it drives.
"""
