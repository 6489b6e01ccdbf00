"""pipelines.materialize against a real 3-node Redis Cluster (``redis_type: redis_cluster``).

The module starts three ``redis-server --cluster-enabled yes`` processes on free loopback
ports, joins them with ``redis-cli --cluster create`` and stops them at the end. Feast's
own ``materialize`` on the same cluster is the reference: the raw hashes on every node and
``get_online_features`` must be identical after ours.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.repos.driver_repo import build_repo, generate, window
from pipelines.materialize import materialize, verify
from tests.pipelines.test_materialize import REFS, _same
from tests.support import free_port

N_ROWS, N_ENTITIES = 6_000, 1_500

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None or shutil.which("redis-cli") is None,
    reason="redis-server / redis-cli not on PATH",
)


def _cluster_port(taken: list[int]) -> int:
    """A free loopback port P whose cluster bus port P + 10000 is free too (and <= 65535)."""
    for _ in range(200):
        p = free_port()
        if p in taken or p + 10_000 > 65_535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 10_000))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair for a cluster node")


def _cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[int]]:
    """Three cluster-enabled redis-servers (no replicas, no persistence); yields the ports."""
    workdir = tmp_path_factory.mktemp("redis_cluster")
    ports: list[int] = []
    procs: list[subprocess.Popen[bytes]] = []
    try:
        while len(ports) < 3:
            p = _cluster_port(ports)
            ports.append(p)
            procs.append(
                subprocess.Popen(
                    [
                        "redis-server",
                        "--port",
                        str(p),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(workdir / f"nodes-{p}.conf"),
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                        "--dir",
                        str(workdir),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )  # fmt: skip
            )
        deadline = time.monotonic() + 15
        for p, proc in zip(ports, procs, strict=True):
            while "PONG" not in _cli(p, "ping"):
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"cluster node on port {p} did not start")
                time.sleep(0.05)
        created = subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports),
             "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )  # fmt: skip
        assert created.returncode == 0, created.stdout + created.stderr
        for p in ports:
            while "cluster_state:ok" not in _cli(p, "cluster", "info"):
                if time.monotonic() > deadline + 30:
                    pytest.fail(f"cluster node {p} never reached cluster_state:ok")
                time.sleep(0.1)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _nodes(ports: list[int]) -> list[Any]:
    import redis

    return [redis.Redis(host="127.0.0.1", port=p) for p in ports]


def _snapshot(ports: list[int], project: str) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of the project on every node (each key lives on exactly one node)."""
    out: dict[bytes, dict[bytes, bytes]] = {}
    for node in _nodes(ports):
        for k in node.scan_iter(match=b"*" + project.encode(), count=10_000):
            assert k not in out
            out[k] = node.hgetall(k)
    return out


def _clear(ports: list[int], project: str) -> int:
    n = 0
    for node in _nodes(ports):
        for k in list(node.scan_iter(match=b"*" + project.encode(), count=10_000)):
            n += node.delete(k)
    return n


def _online(store: Any, ids: list[int]) -> dict[str, list[Any]]:
    rows = [{"driver_id": i} for i in ids]
    return dict(store.get_online_features(features=REFS, entity_rows=rows).to_dict())


@pytest.fixture(scope="module")
def cluster_repo(
    cluster: list[int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    table = generate(N_ROWS, N_ENTITIES, seed=4)
    repo = tmp_path_factory.mktemp("cluster_repo")
    project = f"skc_{uuid.uuid4().hex[:10]}"
    conn = ",".join(f"127.0.0.1:{p}" for p in cluster)
    store = build_repo(repo, table, conn, project=project, redis_type="redis_cluster")
    ids = sorted(set(table.column("driver_id").to_pylist()))
    start, end = window()
    store.materialize(start_date=start, end_date=end)
    try:
        yield {
            "repo": repo,
            "project": project,
            "store": store,
            "ids": ids,
            "online": _online(store, ids),
            "raw": _snapshot(cluster, project),
        }
    finally:
        _clear(cluster, project)


def test_cluster_matches_feast(cluster: list[int], cluster_repo: dict[str, Any]) -> None:
    project, store, raw = cluster_repo["project"], cluster_repo["store"], cluster_repo["raw"]
    assert len(raw) > 1_000
    per_node = [sum(1 for _ in n.scan_iter(match=b"*" + project.encode())) for n in _nodes(cluster)]
    assert all(c > 0 for c in per_node), per_node  # the keys really are spread over 3 nodes
    assert _clear(cluster, project) == len(raw)
    assert _online(store, cluster_repo["ids"][:20])["conv_rate"] == [None] * 20

    start, end = window()
    report = materialize(
        cluster_repo["repo"], start, end, verify=True, sample=500, show_progress=False,
        record_interval=False, chunk=700,
    )  # fmt: skip
    (view,) = report.views
    assert view.expected == view.written == view.present == len(raw)
    assert view.verified == 500 and view.lost == 0 and report.ok
    assert _snapshot(cluster, project) == raw
    assert _same(_online(store, cluster_repo["ids"]), cluster_repo["online"])

    again = verify(cluster_repo["repo"], start, end, sample=10_000)
    assert again.ok and again.views[0].present == len(raw)
    assert again.views[0].verified == len(raw)


def test_cluster_rerun_is_idempotent(cluster: list[int], cluster_repo: dict[str, Any]) -> None:
    start, end = window()
    materialize(cluster_repo["repo"], start, end, show_progress=False, record_interval=False)
    report = materialize(
        cluster_repo["repo"], start, end, show_progress=False, record_interval=False
    )
    (view,) = report.views
    assert view.written == 0 and view.skipped_not_newer == view.expected
    assert _snapshot(cluster, cluster_repo["project"]) == cluster_repo["raw"]


def test_cluster_verify_reports_loss(cluster: list[int], cluster_repo: dict[str, Any]) -> None:
    project = cluster_repo["project"]
    start, end = window()
    materialize(cluster_repo["repo"], start, end, show_progress=False, record_interval=False)
    deleted = 0
    for node in _nodes(cluster):  # one key from each node
        key = next(iter(node.scan_iter(match=b"*" + project.encode())))
        deleted += node.delete(key)
    report = verify(cluster_repo["repo"], start, end, sample=10)
    assert not report.ok and report.views[0].lost == deleted == 3
    materialize(cluster_repo["repo"], start, end, show_progress=False, record_interval=False)
    assert _snapshot(cluster, project) == cluster_repo["raw"]


def test_cluster_write_path_parity_with_key_ttl(cluster: list[int], tmp_path: Path) -> None:
    table = generate(300, 80, seed=5)
    project = f"skc_{uuid.uuid4().hex[:10]}"
    conn = ",".join(f"127.0.0.1:{p}" for p in cluster)
    store = build_repo(
        tmp_path / "r", table, conn, project=project, key_ttl_seconds=3600,
        redis_type="redis_cluster",
    )  # fmt: skip
    start, end = window()
    try:
        store.materialize(start_date=start, end_date=end)
        feast_raw = _snapshot(cluster, project)
        _clear(cluster, project)
        materialize(tmp_path / "r", start, end, show_progress=False)
        assert _snapshot(cluster, project) == feast_raw
        ttls = [
            n.ttl(k) for n in _nodes(cluster) for k in n.scan_iter(match=b"*" + project.encode())
        ]
        assert len(ttls) == len(feast_raw) and all(3500 < t <= 3600 for t in ttls)
    finally:
        _clear(cluster, project)
