"""Resolved, typed property objects: expressions s(y), regions (balls), input-set bindings.

Convention (both papers): s >= 0 is safe, s < 0 is a violation.
"""
