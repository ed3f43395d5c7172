"""Backends: a bound task (property x inputs x model) -> one Outcome per input. One registry."""
