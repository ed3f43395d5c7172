"""nnspec: safety specs as code for neural networks."""

__version__ = "0.1.0"
