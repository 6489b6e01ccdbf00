"""Run one small table through every engine for a contract case."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.parity import compare_columns, run_beam, run_online, run_spark
from transforms import FeatureSet, StatisticsArtifact
from transforms.statistics import analyze_table


@dataclass
class EngineResults:
    artifact: StatisticsArtifact
    online: pa.Table

    def column(self, name: str) -> list:
        return self.online.column(name).to_pylist()


def run_everywhere(
    fs: FeatureSet, table: pa.Table, workdir: Path, key: str = "id"
) -> EngineResults:
    """Analyze and apply in Python/online, Spark and Beam; assert all agree bit for bit."""
    parquet = workdir / "input.parquet"
    pq.write_table(table, parquet)
    art = analyze_table(fs, table)
    online = run_online(fs, art, table, key)
    spark_art, spark_out = run_spark(fs, parquet, workdir / "spark", key)
    beam_art, beam_out = run_beam(fs, parquet, workdir / "beam", key, art)
    assert spark_art.values == art.values, "spark artifact differs from python"
    assert beam_art.values == art.values, "beam artifact differs from python"
    assert spark_art.content_hash == beam_art.content_hash == art.content_hash
    for other, engine in ((spark_out, "spark"), (beam_out, "beam")):
        assert other.num_rows == online.num_rows, engine
        for t in fs.order:
            bad = compare_columns(online.column(t.name), other.column(t.name))
            assert bad.size == 0, (
                f"{engine} differs on {t.name} at rows {bad[:5].tolist()}: "
                f"{online.column(t.name).take(bad[:5]).to_pylist()} vs "
                f"{other.column(t.name).take(bad[:5]).to_pylist()}"
            )
    return EngineResults(art, online)
