"""result.json is written atomically even when two threads of one process write it at once."""

from __future__ import annotations

import threading
from pathlib import Path

from metrics_collector.result import TrialResult


def test_concurrent_writers_in_one_process(tmp_path: Path) -> None:
    target = tmp_path / "result.json"
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def writer(code: int) -> None:
        start.wait()
        try:
            for _ in range(50):
                TrialResult(exit_code=code).write(target)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    result = TrialResult.read(target)
    assert result is not None and result.exit_code in range(8)
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]  # no temporary left
