"""The RBAC engine: pure access decisions over roles (Teleport role v7 semantics). No I/O."""
