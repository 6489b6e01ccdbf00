"""The storage layout skewless shares with Feast, below both pipelines (which write it) and
serving (which reads it): Redis keys, fields and values (``redis_layout``, ``feast_values``),
RESP commands (``resp``), the registry description (``manifest``) and the RESTORE payload
writer (``redis_dump``, the only module here that loads numpy and pyarrow)."""
