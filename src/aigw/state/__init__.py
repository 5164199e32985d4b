"""Shared state: a small key-value Protocol, an in-memory backend and a Redis backend."""

from aigw.state.base import StateBackend, StateUnavailable

__all__ = ["StateBackend", "StateUnavailable"]
