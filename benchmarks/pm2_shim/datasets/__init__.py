"""Placeholder names so Privacy Meter 2's modules import; none is usable (see ../README.md)."""

from _placeholder import placeholder_getattr

__getattr__ = placeholder_getattr("datasets")
