"""Model groups: the deployments behind one model name, and how one is picked.

Picking is pure and cheap (no I/O, no clock): smooth weighted round-robin, the
algorithm nginx uses, spreads picks in proportion to weight without bursts.
"""

from __future__ import annotations

from collections.abc import Sequence

from aigw.errors import ModelNotFound
from aigw.providers.base import Provider


class ModelGroup:
    __slots__ = ("_current", "_only", "_total", "_weights", "deployments", "name", "strategy")

    def __init__(self, name: str, strategy: str, deployments: Sequence[Provider]) -> None:
        self.name = name
        self.strategy = strategy
        self.deployments = list(deployments)
        self._only = self.deployments[0] if len(self.deployments) == 1 else None
        equal = strategy == "round-robin"
        self._weights = [1.0 if equal else d.settings.weight for d in self.deployments]
        self._total = sum(self._weights)
        self._current = [0.0] * len(self.deployments)

    def pick(self) -> Provider:
        if self._only is not None:
            return self._only
        best = 0
        current = self._current
        for i, weight in enumerate(self._weights):
            current[i] += weight
            if current[i] > current[best]:
                best = i
        current[best] -= self._total
        return self.deployments[best]


class Router:
    """Model name → group. Built whole from settings; replaced whole on reload."""

    def __init__(self, groups: Sequence[ModelGroup]) -> None:
        self.groups = {g.name: g for g in groups}

    def group(self, model: str) -> ModelGroup:
        group = self.groups.get(model)
        if group is None:
            raise ModelNotFound(f"The model `{model}` does not exist", param="model")
        return group
