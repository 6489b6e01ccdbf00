"""RESP, the Redis protocol, of the commands skewless sends: one definition for the lookup
path (``serving.redis_client``, ``serving.lookup``) and the materializer
(``pipelines.materialize``), whose columnar encoders build the same bytes from these parts.

A command is an array of bulk strings: ``*<n>\\r\\n`` then per argument
``$<length>\\r\\n<bytes>\\r\\n``. Commands on one key (HMGET, HGET, HSET, EXPIRE, RESTORE) are
prebuilt around it: ``head`` (array header and command name) + ``bulk(key)`` + ``tail``
(the other arguments), so a pipeline of them costs one join per key.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "bulk",
    "bulk_header",
    "command",
    "command_head",
    "hmget_parts",
    "key_command_parts",
    "key_commands",
]


def bulk_header(length: int) -> bytes:
    """``$<length>\\r\\n``, what precedes a bulk string of ``length`` bytes."""
    return b"$%d\r\n" % length


def bulk(arg: bytes) -> bytes:
    """One bulk string: ``$<length>\\r\\n<arg>\\r\\n``."""
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def command(*args: bytes | str | int) -> bytes:
    """RESP encoding of one command (str and int arguments as their UTF-8 text)."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(bulk(a if isinstance(a, bytes) else str(a).encode()))
    return b"".join(parts)


def command_head(name: bytes, n_args: int) -> bytes:
    """The bytes of a command ``name`` with ``n_args`` arguments before its first argument:
    the array header and the name."""
    return b"*%d\r\n" % (n_args + 1) + bulk(name)


def key_command_parts(name: bytes, args: Sequence[bytes]) -> tuple[bytes, bytes]:
    """(head, tail) of ``<name> <key> <args...>``: a command is head + bulk(key) + tail."""
    return command_head(name, len(args) + 1), b"".join(bulk(a) for a in args)


def hmget_parts(fields: Sequence[bytes]) -> tuple[bytes, bytes]:
    """(head, tail) of ``HMGET <key> <fields...>``: a command is head + bulk(key) + tail."""
    return key_command_parts(b"HMGET", fields)


def key_commands(head: bytes, tail: bytes, keys: Sequence[bytes]) -> bytes:
    """``head + bulk(key) + tail`` for every key, in order, as one buffer; one C-level join
    when the keys share a length (as Feast's keys of one join-key set of ints do)."""
    if not keys:
        return b""
    size = len(keys[0])
    if all(len(k) == size for k in keys):
        prefix = head + b"$%d\r\n" % size
        suffix = b"\r\n" + tail
        return prefix + (suffix + prefix).join(keys) + suffix
    return b"".join([head + b"$%d\r\n%b\r\n" % (len(k), k) + tail for k in keys])
