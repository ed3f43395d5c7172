"""nnspec: safety specs as code for neural networks."""

__version__ = "0.1.0"


def check_module(*args, **kwargs):
    """See :func:`nnspec.api.check_module` (imported lazily: torch loads only when used)."""
    from nnspec.api import check_module as _check

    return _check(*args, **kwargs)
