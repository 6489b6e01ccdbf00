"""The storage layout's own error class, in the one hierarchy (``transforms/errors.py``)."""

from __future__ import annotations

from transforms.errors import SchemaError


class LayoutError(SchemaError, ValueError):
    """A value, an entity key or stored bytes that Feast's layout cannot hold or does not
    define: outside its type's range, a type Feast has no encoding for, malformed protobuf
    bytes. Also a ``ValueError``, as a bad value given to a converter is in Python."""
