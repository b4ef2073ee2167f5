"""limen.proxy (see the module docstrings inside)."""
