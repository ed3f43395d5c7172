"""Renderers of serialised results: terminal, JUnit XML, self-contained HTML."""
