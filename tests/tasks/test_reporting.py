"""The progress artifact shows the pace of the chunks committed so far while loading."""

from __future__ import annotations

import re
import time

import pytest
from prefect import flow

from batchyard.ingest.job import ChunkResult, ImportJob
from tasks.reporting import BatchProgress
from tests.helpers import latest_artifact

pytestmark = pytest.mark.usefixtures("prefect_harness")


@flow
def paced() -> tuple[str, str]:
    job = ImportJob(batch_id="pace-1", source="in.csv", db="sqlite:///unused.db", table="t")
    progress = BatchProgress(job, {}, interval=0)
    progress.planned(300)
    time.sleep(0.2)
    progress.add(ChunkResult(0, 100, success=100))
    loading = progress.description
    progress.finish()
    return loading, progress.description


def test_the_progress_artifact_shows_rows_per_second_and_an_eta_while_loading():
    loading, closing = paced()
    found = re.search(r"; stage: loading; ([0-9,]+) rows/s, ETA ([0-9,]+) s$", loading)
    assert found, loading
    rate = int(found.group(1).replace(",", ""))
    assert 0 < rate <= 500  # 100 rows in at least 0.2 s
    assert int(found.group(2).replace(",", "")) == pytest.approx(200 / rate, abs=1)
    assert closing.endswith("; stage: closing")  # no pace once every chunk is in
    assert latest_artifact("batch-pace-1-progress")["description"] == closing
