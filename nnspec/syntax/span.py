from nnspec.span import Span  # noqa: F401  (re-exported for the syntax stage)
