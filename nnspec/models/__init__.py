"""The only door to the network: loading, batching, normalisation, counted evaluation, inputs."""

from nnspec.models.loading import load_model
from nnspec.models.model import Model

__all__ = ["Model", "load_model"]
