"""Commands of the transform core: parity."""

from __future__ import annotations
