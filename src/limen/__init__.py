"""Limen: an identity-aware access platform (certificate authority + access proxy) driven by Git.

The package is layered (bottom to top): ``api`` (resource types, schemas, validation; pure),
``rbac`` (pure access decisions), ``ca`` and ``backend`` (signing, storage), ``services``
(typed resource storage and apply plans), ``auth`` (the auth server), then the fronts
``proxy``, ``agents``, ``operator`` and ``client``, and the command lines in ``cli``.
The layering is enforced by import-linter contracts in ``pyproject.toml``.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
