"""Metrics collector: runs a trial command and reports the metrics it prints.

Importing the package is cheap and gRPC-free on purpose: the controller only needs
``metrics_collector.result`` to read what a collector left behind.
"""

from __future__ import annotations

__all__: list[str] = []
