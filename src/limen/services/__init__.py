"""Typed resource storage over a ``Backend``, apply plans and ownership rules."""
