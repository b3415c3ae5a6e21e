"""Named implementations of one config choice: the only list of what a choice allows."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from ganlab.config import ConfigError

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    """`name -> implementation` for the config key `key` (e.g. "loss" for loss.name).

    Parts register their implementations where they are defined; `choose` is the one
    place a name is checked, with an error that lists what exists."""

    def __init__(self, key: str):
        super().__init__()
        self.key = key

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self:
                raise ValueError(f"{self.key}: {name!r} is registered twice")
            self[name] = obj
            return obj

        return add

    def choose(self, name: str, key: str | None = None) -> T:
        """The implementation called `name`; `key` names the config key in the error."""
        if name not in self:
            raise ConfigError(f"{key or self.key}={name!r} is not allowed; choose one of: "
                              f"{', '.join(self)}")
        return self[name]
