"""Observations per second from the collector's Reporter into DBManager and its database.

    python bench/report_path.py [--observations 20000] [--postgres URL] [--mysql URL]

A real DBManager gRPC server (in this process, on 127.0.0.1:0) over SQLite, and over
PostgreSQL/MariaDB when their URLs are given (or set in KATIB_TEST_POSTGRES_URL /
KATIB_TEST_MYSQL_URL). The Reporter sends in its default batches, as a trial's
collector does; the clock stops when every observation is stored.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from katib.storage.dbmanager import serve_dbmanager
from katib.storage.sql import SQLStorage
from metrics_collector.parsers import ParsedMetric
from metrics_collector.reporter import Reporter


def _isolated_url(url: str) -> tuple[str, object]:
    """A throw-away database on the server behind `url` (dropped afterwards)."""
    import sqlalchemy as sa

    name = f"katib_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    return str(sa.make_url(url).set(database=name)), (admin, name)


def _drop(handle: object) -> None:
    import sqlalchemy as sa

    admin, name = handle  # type: ignore[misc]
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE {name}"))
    admin.dispose()


def measure(url: str, observations: int, batch_size: int) -> float:
    storage = SQLStorage(url)
    server, port = serve_dbmanager(storage, "127.0.0.1", 0)
    try:
        with tempfile.TemporaryDirectory() as spool:
            reporter = Reporter(
                "bench-trial", f"127.0.0.1:{port}", batch_size=batch_size,
                flush_interval=0.05, spool_path=Path(spool) / "unreported.jsonl",
            )
            now = datetime.now(UTC)
            metrics = [
                ParsedMetric("accuracy" if i % 2 else "loss", f"{i / observations:.6f}", now)
                for i in range(observations)
            ]
            start = time.perf_counter()
            for i in range(0, observations, 100):
                reporter.add(metrics[i : i + 100])
            reporter.close(timeout=300)
            elapsed = time.perf_counter() - start
        stored = len(storage.get_observation_log("bench-trial"))
        if stored != observations:
            raise SystemExit(f"{url}: stored {stored} of {observations}")
        return observations / elapsed
    finally:
        server.stop(None)
        storage.close()


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--observations", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--postgres", default=os.environ.get("KATIB_TEST_POSTGRES_URL"))
    parser.add_argument("--mysql", default=os.environ.get("KATIB_TEST_MYSQL_URL"))
    args = parser.parse_args(argv)
    lines = ["| database | observations | batch | observations/s |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        targets: list[tuple[str, str, object | None]] = [
            ("SQLite", f"sqlite:///{tmp}/bench.db", None)
        ]
        for label, url in (("PostgreSQL", args.postgres), ("MariaDB", args.mysql)):
            if url:
                isolated, handle = _isolated_url(url)
                targets.append((label, isolated, handle))
        for label, url, handle in targets:
            try:
                rate = measure(url, args.observations, args.batch_size)
                lines.append(f"| {label} | {args.observations} | {args.batch_size} | {rate:,.0f} |")
            finally:
                if handle is not None:
                    _drop(handle)
    print("\n".join(lines))
    return lines


if __name__ == "__main__":
    main()
