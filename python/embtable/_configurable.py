"""The Keras-style config plumbing shared by initializers, regularizers and constraints."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T", bound="Configurable")


class Configurable:
    """``get_config()`` / ``from_config()``; equality and repr follow the config."""

    def get_config(self) -> dict[str, Any]:
        return {}

    @classmethod
    def from_config(cls: type[T], config: dict[str, Any]) -> T:
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and isinstance(other, Configurable)
            and self.get_config() == other.get_config()
        )

    __hash__ = None  # type: ignore[assignment]


def serialize(obj: Configurable) -> dict[str, Any]:
    """``{"class_name": ..., "config": ...}`` as Keras."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def deserialize(config: dict[str, Any], classes: dict[str, type[T]], kind: str) -> T:
    """The object of a serialized dict; ``kind`` names the family in errors."""
    name = config.get("class_name")
    if name not in classes:
        raise ValueError(f"unknown {kind} class {name!r}; known: {sorted(classes)}")
    return classes[name].from_config(dict(config.get("config") or {}))
