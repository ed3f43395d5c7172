"""The only door to the network: loading, batching, normalisation, counted evaluation, inputs."""

__all__ = ["Model", "load_model"]


def __getattr__(name: str):  # torch is imported on first use, not by ``import nnspec.models.x``
    if name == "load_model":
        from nnspec.models.loading import load_model

        return load_model
    if name == "Model":
        from nnspec.models.model import Model

        return Model
    raise AttributeError(f"module 'nnspec.models' has no attribute {name!r}")
