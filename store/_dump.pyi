"""Types of the extension module compiled from ``_dump.c`` (see ``store/redis_dump.py``)."""

from typing_extensions import Buffer

ABI_VERSION: int

def restore_rows(
    n: int,
    nf: int,
    key_off: Buffer,
    key_data: Buffer,
    name_off: Buffer,
    name_data: Buffer,
    val_off: Buffer,
    val_data: Buffer,
    head: Buffer,
    ttl: Buffer,
    names_fit: bool,
    max_value: int,
    out: Buffer,
    listpack: Buffer,
    /,
) -> int: ...
def crc64(data: Buffer, /) -> int: ...
