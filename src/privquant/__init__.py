"""privquant: quantization as a defense against membership inference, with a built-in audit."""

__version__ = "0.1.0"
