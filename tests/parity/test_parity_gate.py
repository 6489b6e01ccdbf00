"""The parity gate as users run it: `skewless parity` exits 0 with zero mismatches."""

from __future__ import annotations

import subprocess
import sys


def test_parity_command_reports_zero_mismatches():
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "parity", "--rows", "20000"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 mismatches across online/spark/beam" in done.stdout
    assert "(identical)" in done.stdout


def test_parity_rejects_bad_rows_with_one_line():
    done = subprocess.run(
        [sys.executable, "-m", "cli.main", "parity", "--rows", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "skewless: error: --rows must be a positive number of rows"
    ]
