"""limen.auth (see the module docstrings inside)."""
