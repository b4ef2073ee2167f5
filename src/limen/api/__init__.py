"""Stable resource types, their schemas and validation: pure code, no I/O beyond reading schemas.

Called by every other layer; imports nothing of Limen but ``limen.errors``.
"""
