"""limen.operator (see the module docstrings inside)."""
