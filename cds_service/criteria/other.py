"""Exclusion criteria (other). Each function's docstring quotes the protocol sentence it implements.

This module does no I/O.
"""

from __future__ import annotations

__all__: list[str] = []
