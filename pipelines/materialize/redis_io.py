"""Pipelined Redis I/O: the writer's connection to one Redis or a Redis Cluster, and the
replies of a standalone connection checked in bulk."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from store import redis_dump
from store import redis_layout as rl
from store.resp import hmget_parts, key_command_parts, key_commands
from transforms.errors import StoreError, StoreUnavailable


class RedisWriter:
    """Pipelined HGET/HSET/EXPIRE/HMGET against one Redis or a Redis Cluster.

    Standalone Redis gets hand-packed RESP on one connection (far less per-command
    Python work than redis-py's packer); a cluster goes through redis-py's ClusterPipeline,
    which routes each key to its slot owner.
    """

    def __init__(self, redis_type: str, connection_string: str) -> None:
        import redis as redis_mod
        from redis.cluster import ClusterNode, RedisCluster

        nodes, params = rl.parse_connection_string(connection_string)
        params.setdefault("socket_connect_timeout", 5)
        params.setdefault("socket_timeout", 60)
        self.where = ",".join(f"{h}:{p}" for h, p in nodes)
        self.errors = (redis_mod.ConnectionError, redis_mod.TimeoutError, OSError)
        self._cluster_errors = (
            *self.errors,
            redis_mod.RedisClusterException,
            redis_mod.exceptions.ClusterError,
        )
        self.cluster = redis_type == "redis_cluster"
        self.client: Any
        try:
            if self.cluster:
                params.pop("db", None)
                self.client = RedisCluster(
                    startup_nodes=[ClusterNode(h, p) for h, p in nodes], **params
                )
            else:
                from redis.backoff import ExponentialBackoff
                from redis.retry import Retry

                # redis-py's default retry spends ~6 s on a refused connection; fail fast.
                params.setdefault("retry", Retry(ExponentialBackoff(cap=0.5, base=0.05), 2))
                host, port = nodes[0]
                self.client = redis_mod.Redis(host=host, port=port, **params)
            self.client.ping()
        except self.errors as exc:
            raise self.unavailable(exc) from exc
        except redis_mod.RedisClusterException as exc:
            raise self.unavailable(exc) from exc
        self.restore_refused: str | None = None  # why the server refused a RESTORE, if it did

    @functools.cached_property
    def restore_limits(self) -> tuple[int, int] | None:
        """(hash-max-listpack-entries, -value) of a standalone Redis >= 7.0, which loads the
        listpack hashes of ``redis_dump``'s RESTORE payloads; None where new keys go by HSET
        (a cluster, no compiled writer, CONFIG disabled). Asked on first use, so a writer
        that only reads (``verify``) costs no extra round trips."""
        import redis as redis_mod

        if self.cluster or not redis_dump.available():
            return None
        try:
            version = str(self.client.info("server").get("redis_version", "0"))
            if int(version.split(".")[0]) < 7:  # listpack hashes in DUMP payloads: 7.0
                return None
            config = self.client.config_get("hash-max-listpack-*")
            return int(config["hash-max-listpack-entries"]), int(config["hash-max-listpack-value"])
        except self.errors as exc:
            raise self.unavailable(exc) from exc
        except (redis_mod.ResponseError, KeyError, ValueError):
            return None  # e.g. CONFIG disabled: HSET only

    def unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"REDIS connection to {self.where} failed: {exc}")

    def close(self) -> None:
        self.client.close()

    def connection(self) -> Any:
        try:
            return self.client.connection_pool.get_connection()
        except self.errors as exc:
            raise self.unavailable(exc) from exc

    def send(self, conn: Any, payload: bytes | memoryview) -> None:
        try:
            conn.send_packed_command([payload], check_health=False)
        except self.errors as exc:
            conn.disconnect()
            raise self.unavailable(exc) from exc

    def _read(self, conn: Any, n_replies: int) -> list[Any]:
        """Read ``n_replies`` replies (error replies come back as ResponseError objects)."""
        import redis as redis_mod

        out: list[Any] = []
        try:
            parser = getattr(conn, "_parser", None)
            reader = getattr(parser, "_reader", None)
            if reader is not None and hasattr(parser, "read_from_socket"):
                # hiredis fast path: pull replies straight from its reader, refilling from
                # the socket as needed.
                from redis._parsers import hiredis as hiredis_parser

                not_enough = getattr(hiredis_parser, "NOT_ENOUGH_DATA", False)
                gets = reader.gets
                while len(out) < n_replies:
                    reply = gets()
                    if reply is not_enough:
                        parser.read_from_socket()  # type: ignore[union-attr]
                    else:
                        out.append(reply)
                return out
            for _ in range(n_replies):
                try:
                    out.append(conn.read_response())
                except redis_mod.ResponseError as exc:
                    out.append(exc)
            return out
        except self.errors as exc:
            conn.disconnect()
            raise self.unavailable(exc) from exc

    def raw(self, payload: bytes | memoryview, n_replies: int) -> list[Any]:
        """Send packed commands on one connection and read ``n_replies`` replies."""
        conn = self.connection()
        try:
            self.send(conn, payload)
            return self._read(conn, n_replies)
        finally:
            self.client.connection_pool.release(conn)

    def hget_many(self, keys: Sequence[bytes], fld: bytes) -> list[bytes | None]:
        """HGET ``fld`` of every key, in one pipelined round trip."""
        if self.cluster:
            try:
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.hget(k, fld)
                return list(pipe.execute())
            except self._cluster_errors as exc:
                raise self.unavailable(exc) from exc
        return self.raw(key_commands(*key_command_parts(b"HGET", [fld]), keys), len(keys))

    def hmget_many(self, keys: Sequence[bytes], fields: Sequence[bytes]) -> list[list[Any]]:
        """HMGET ``fields`` of every key, in one pipelined round trip."""
        if self.cluster:
            try:
                pipe = self.client.pipeline(transaction=False)
                for k in keys:
                    pipe.hmget(k, list(fields))
                return list(pipe.execute())
            except self._cluster_errors as exc:
                raise self.unavailable(exc) from exc
        return self.raw(key_commands(*hmget_parts(fields), keys), len(keys))

    def hset_many(
        self,
        keys: Sequence[bytes],
        mappings: Sequence[Mapping[bytes, bytes]],
        ttl_seconds: int | None,
    ) -> None:
        """HSET each key's field/value mapping, plus EXPIRE when ``ttl_seconds`` (cluster)."""
        if not keys:
            return
        try:
            pipe = self.client.pipeline(transaction=False)
            for k, mapping in zip(keys, mappings, strict=True):
                pipe.hset(k, mapping=mapping)
                if ttl_seconds:
                    pipe.expire(k, ttl_seconds)
            results = pipe.execute(raise_on_error=False)
        except self._cluster_errors as exc:
            raise self.unavailable(exc) from exc
        _check_writes(results)


def _check_writes(results: Sequence[Any]) -> None:
    errors = [r for r in results if isinstance(r, Exception)]
    if errors:
        raise StoreError(f"Redis rejected {len(errors)} writes, first: {errors[0]}")


_NIL = b"$-1\r\n"


class _ReplyStream:
    """Replies of one standalone connection, read straight from its socket and checked in
    bulk with C-level byte operations instead of one Python call per reply (that costs as
    much Python time as Redis spends applying the HSET).

    HSET, EXPIRE and EXISTS replies are single-line integers (``:5\r\n``), errors single
    lines too (``-ERR ...\r\n``), so counting newlines finds where n of them end; the
    ``_ts`` HGETs of keys the view never wrote are all ``$-1\r\n``. Only other HGET replies go
    through a hiredis reader, which is then told nothing past them. Bytes are read past
    redis-py's parser, so every earlier reply on the connection must have been read.
    """

    def __init__(self, conn: Any) -> None:
        self._sock = conn._sock  # noqa: SLF001 - redis-py exposes no public socket; replies are read past its parser
        self._buf = bytearray()

    def _fill(self) -> bytes:
        data = self._sock.recv(1 << 20)
        if not data:
            raise ConnectionError("Redis closed the connection")
        self._buf += data
        return data

    def statuses(self, n: int) -> tuple[np.ndarray, list[str]]:
        """Consume ``n`` single-line replies; return the indices of the error replies among
        them and their texts."""
        if n == 0:
            return np.zeros(0, dtype=np.int64), []
        while self._buf.count(b"\n") < n:
            self._fill()
        view = np.frombuffer(self._buf, dtype=np.uint8)
        ends = np.flatnonzero(view == 0x0A)[:n] + 1  # the first n newlines end these lines
        starts = np.concatenate(([0], ends[:-1]))
        failed = np.flatnonzero(view[starts] == ord("-"))
        del view  # release the buffer export before resizing
        texts = [
            self._buf[starts[i] + 1 : ends[i] - 2].decode(errors="replace") for i in failed.tolist()
        ]
        del self._buf[: int(ends[-1])]
        return failed, texts

    def lines(self, n: int) -> None:
        """Consume ``n`` single-line replies; raise if any is an error."""
        failed, texts = self.statuses(n)
        if len(failed):
            raise StoreError(f"Redis rejected {len(failed)} writes, first: {texts[0]}")

    def integer(self) -> int:
        """Consume one integer reply (e.g. EXISTS)."""
        while b"\n" not in self._buf:
            self._fill()
        end = self._buf.index(b"\n") + 1
        line = bytes(self._buf[: end - 2])
        del self._buf[:end]
        if not line.startswith(b":"):
            raise StoreError(f"Redis rejected a read: {line[1:].decode(errors='replace')}")
        return int(line[1:])

    def hget_values(self, n: int) -> pa.Array | None:
        """Consume ``n`` HGET replies: None when all are nil (no key had the field), else
        the values (binary, null for nil)."""
        nils = _NIL * n
        while True:
            head = bytes(self._buf[: len(nils)])
            if not nils.startswith(head):
                return self._parse(n)
            if len(head) == len(nils):
                del self._buf[: len(nils)]
                return None
            self._fill()

    def _parse(self, n: int) -> pa.Array:
        """The next ``n`` bulk-string replies, parsed by hiredis as one array (a ``*n``
        header put in front of them) and counted by arrow: no Python call per reply. Only
        their bytes are consumed; later replies stay buffered."""
        import hiredis

        reader = hiredis.Reader()
        reader.feed(b"*%d\r\n" % n)
        reader.feed(bytes(self._buf))
        while (replies := reader.gets()) is False:
            reader.feed(self._fill())
        try:
            values = pa.array(replies, type=pa.binary())
        except (pa.ArrowTypeError, pa.ArrowInvalid):
            error = next(r for r in replies if isinstance(r, hiredis.ReplyError))
            raise StoreError(f"Redis rejected a read of the _ts field: {error}") from None
        length = pc.binary_length(values).fill_null(-1).to_numpy(zero_copy_only=False)
        digits = np.floor(np.log10(np.maximum(length, 1))).astype(np.int64) + 1
        # $-1\r\n, or $<len>\r\n<bytes>\r\n
        del self._buf[: int(np.where(length < 0, 5, length + digits + 5).sum())]
        return values
