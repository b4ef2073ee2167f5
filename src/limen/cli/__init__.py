"""limen.cli (see the module docstrings inside)."""
