"""Settings → a state backend."""

from __future__ import annotations

from aigw.settings import StateSettings
from aigw.state.base import StateBackend
from aigw.state.memory import MemoryState


def make_state(settings: StateSettings) -> StateBackend:
    if settings.backend == "redis":
        from aigw.state.redis import RedisState

        return RedisState(settings.url, settings.timeout_s)
    return MemoryState()
