"""A Kubernetes API emulator for tests: kmock 0.8's emulator with kube-apiserver semantics.

``fixtures.py`` has the ``kube_api`` fixture (registered for the whole suite in
``tests/conftest.py``) and :class:`~kube.fixtures.KubeAPI`; ``apiserver.py`` the emulator and
its HTTPS server; ``store.py`` what the API server does to objects; ``registry.py`` resource
types and discovery; ``patches.py`` and ``selectors.py`` the request languages.
"""
