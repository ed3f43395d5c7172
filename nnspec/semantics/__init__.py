"""AST -> typed property objects. Resolves names, folds constants, collects ALL errors of a file."""

from nnspec.semantics.lower import lower

__all__ = ["lower"]
