"""Text -> Lark tree -> frozen AST with spans. The only package that imports lark.

Modules: ``ast`` (the frozen tree), ``parser`` (Lark -> AST),
``diagnostics`` (rendering of positioned errors).
"""
