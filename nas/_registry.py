"""Registries by decorator (as timm's model registry): names map to factories.

A registry knows the module that fills it (``plugins``), imported on the first lookup,
so the core never imports a concrete supernet or hardware target by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(ValueError):
    """A name that no registry entry has; the message lists the known names."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    factory: Callable[..., T]
    description: str


class Registry(Generic[T]):
    """Name -> factory, filled by ``@registry.register("name")``.

    Args:
        kind: what the entries are, for messages ("supernet", "hardware target").
        plugins: modules imported before the first lookup; they register the built-ins.
    """

    def __init__(self, kind: str, *, plugins: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._plugins = plugins
        self._loaded = False
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, *, description: str = ""
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries and self._entries[name].factory is not factory:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            doc = description or (factory.__doc__ or "").strip().split("\n")[0]
            self._entries[name] = Entry(name, factory, doc)
            return factory

        return decorator

    def _load_plugins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._plugins:
                importlib.import_module(module)

    def names(self) -> list[str]:
        self._load_plugins()
        return sorted(self._entries)

    def entry(self, name: str) -> Entry[T]:
        """The entry called ``name``.

        Raises:
            UnknownNameError: ``name`` is not a registered name, or not a string at all
                (names arrive from JSON and the command line, so a list is a user error).
        """
        self._load_plugins()
        if isinstance(name, str) and name in self._entries:
            return self._entries[name]
        known = ", ".join(self.names()) or "none"
        if not isinstance(name, str):
            raise UnknownNameError(f"{self.kind} must be a name (a string), got "
                                   f"{repr(name)[:80]}; known: {known}")
        raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}")

    def create(self, name: str, **kwargs: Any) -> T:
        return self.entry(name).factory(**kwargs)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return isinstance(name, str) and name in self._entries
