"""Artifacts on disk: atomic writes, checkpoints, and the content-hash cache."""

from privquant.artifacts.atomic import atomic_path, atomic_write_bytes, atomic_write_json
from privquant.artifacts.cache import ArtifactCache, code_version, content_hash, source_digest
from privquant.artifacts.checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "source_digest",
    "ArtifactCache",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "code_version",
    "content_hash",
    "load_checkpoint",
    "save_checkpoint",
]
