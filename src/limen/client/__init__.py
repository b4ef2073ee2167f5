"""limen.client (see the module docstrings inside)."""
