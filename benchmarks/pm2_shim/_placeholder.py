"""Placeholder modules: any name imported from them is a class that refuses to be used."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def placeholder_getattr(package: str) -> Callable[[str], type]:
    """A module-level ``__getattr__`` for ``package``: every name is a class that raises."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{package} is not available in this shim")

    def getattr_(name: str) -> type:
        return type(name, (), {"__init__": refuse, "from_pretrained": classmethod(refuse)})

    return getattr_
