"""A Kubernetes API emulator for tests: a kmock handler with kube-apiserver semantics.

Imported as ``k8s_emulator`` (``tests/`` is on ``sys.path`` under pytest, as for
``integration``). ``fixtures.py`` has the ``kube_api`` fixture (registered for the whole suite
in ``tests/conftest.py``) and :class:`~k8s_emulator.fixtures.KubeAPI`; ``apiserver.py`` the
emulator, ``server.py`` its HTTPS listener and ``paths.py`` the URLs it serves; ``store.py``
what the API server does to objects; ``registry.py`` resource types and discovery;
``patches.py`` and ``selectors.py`` the request languages; ``authn.py``,
``impersonation.py``, ``rbac.py``, ``requestinfo.py``, ``reviews.py`` and ``audit.py`` who
may do what (``users.py`` the user info); ``pods.py`` the pods that run local processes and
``podexec.py`` (with ``channels.py``), ``podlogs.py`` and ``portforward.py`` (with
``spdy.py`` and ``portforward_channels.py``) their streaming subresources. Its own tests are the
``test_*.py`` files here; tests of Limen that use it live with the other tests.
"""
