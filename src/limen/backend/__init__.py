"""Cluster state storage: a key-value store with revisions, prefix listing, compare-and-swap,
atomic multi-key transactions, expiry and watch.

``Backend`` (in ``limen.backend.base``) is the one seam; ``memory`` serves unit tests and
``sqlite`` is the embedded default. Called by ``limen.services`` only.
"""

from limen.backend.base import Backend, Condition, Delete, Event, EventType, Item, Put

__all__ = ["Backend", "Condition", "Delete", "Event", "EventType", "Item", "Put"]
