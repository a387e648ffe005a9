"""privquant: quantization as a defense against membership inference, with a built-in audit.

import privquant
deployed = privquant.defend(lambda: MyNet(), train=(x, y), bits=4)
deployed.save("ship/")                      # integer export (+ onnx=True)
report = deployed.audit(nonmembers=(x_out, y_out))
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Resolved on first use, so `import privquant` stays light and its submodules can read
# __version__ while the package is still initializing.
_EXPORTS = {
    "defend": "privquant.api",
    "DeployedModel": "privquant.api",
    "audit_model": "privquant.pipeline",
    "quantize": "privquant.quant",
    "load_quantized": "privquant.quant",
    "AuditResults": "privquant.results",
    "TrainConfig": "privquant.training",
}
__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'privquant' has no attribute {name!r}")
