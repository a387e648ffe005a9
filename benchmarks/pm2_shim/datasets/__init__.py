"""Placeholder names so Privacy Meter 2's modules import; none is usable (see ../README.md)."""

from typing import Any


class _Placeholder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("datasets (Hugging Face) is not available in this shim")

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("datasets (Hugging Face) is not available in this shim")


def __getattr__(name: str) -> Any:  # any class name PM2 imports
    return type(name, (_Placeholder,), {})
