"""limen.agents (see the module docstrings inside)."""
