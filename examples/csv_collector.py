"""A Custom metrics collector: reports the ``epoch,loss,accuracy`` rows of a CSV file.

Used by ``custom-collector.yaml`` as ``metricsCollectorSpec.collector.customCollector``.
It follows the CSV the trial writes at ``KATIB_METRICS_PATH`` (the local copy of
``source.fileSystemPath.path``), sends every new row to DBManager with
``report_metrics`` (which reads ``KATIB_TRIAL_NAME`` and the DBManager address from the
environment), and exits once the trial has ended: locally, the collector's standard
input reaches end of file at that moment. In a Kubernetes pod a custom collector has
to watch the training process itself (the pod shares its process namespace), for
instance by waiting for its pid to disappear; that part is left out here.
"""

from __future__ import annotations

import os
import sys
import threading

try:
    from kubeflow.katib import report_metrics  # the Kubeflow SDK, in a cluster
except ImportError:
    from katib import report_metrics  # type: ignore[no-redef]  # this package, locally

POLL_SECONDS = 0.2


def report_new_rows(path: str, offset: int) -> int:
    """Report the complete rows after ``offset``; return the new offset."""
    try:
        with open(path, encoding="utf-8") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind("\n") + 1  # a half-written last row waits for the next poll
    for row in data[:end].splitlines():
        if not row or row.startswith("epoch"):
            continue
        _, loss, accuracy = row.split(",")
        report_metrics({"loss": float(loss), "accuracy": float(accuracy)})
    return offset + len(data[:end].encode("utf-8"))


def main() -> int:
    path = os.environ["KATIB_METRICS_PATH"]
    trial_over = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        trial_over.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    offset = 0
    while not trial_over.wait(POLL_SECONDS):
        offset = report_new_rows(path, offset)
    report_new_rows(path, offset)  # the trial is over: its last rows
    print(f"csv collector: reported the rows of {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
