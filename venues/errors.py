"""Errors raised by the venues package (kept apart so every module can import them)."""

from __future__ import annotations


class VenueConfigError(ValueError):
    """A venue setting or a required secret is wrong or missing; raised before any connection."""


class NodeStartError(RuntimeError):
    """The trading node is RUNNING but its trader never started (a client did not connect)."""


class NodeRunError(RuntimeError):
    """The trading node stopped on an error after it had started (the cause is the message)."""


class NodeInterrupted(RuntimeError):
    """A signal (Ctrl-C, SIGTERM) arrived before the trader started; the node was stopped."""
