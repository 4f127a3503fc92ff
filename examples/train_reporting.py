"""Softmax regression on synthetic 3-class data, reporting metrics the way each collector wants.

Katib trial program for the metrics-collector examples (``file-text.yaml``,
``file-json.yaml``, ``tfevent.yaml``, ``push.yaml``, ``none-kind.yaml``,
``custom-collector.yaml``). The model and data are the same in every example;
only ``--report`` changes, i.e. how the per-epoch ``loss`` and ``accuracy`` (both on a
validation split) reach Katib:

``text-file``  Lines in Katib's default TEXT format, with a leading RFC 3339 time that
               becomes the metric's timestamp, appended to ``--metrics-path``::

                   2024-03-04T17:55:08.123456Z epoch=3 loss=0.4123 accuracy=0.8861

``json-file``  One JSON object per line in ``--metrics-path``. Values are written as
               strings because Katib's JSON collector ignores numbers (kubeflow/katib
               #2162; this implementation accepts both)::

                   {"epoch": 3, "loss": "0.4123", "accuracy": "0.8861", "timestamp": "..."}

``tfevent``    TensorBoard event files (tensorboardX) in ``--metrics-path``/train and
               ``--metrics-path``/test, the layout of Katib's TF example: the Experiment
               collects the ``test`` directory only.
``push``       ``report_metrics({"loss": ..., "accuracy": ...})`` once per epoch.
``csv``        ``epoch,loss,accuracy`` rows in ``--metrics-path``, a format no built-in
               collector reads: ``csv_collector.py`` (a Custom collector) reports them.

Progress lines always go to stdout, which Katib keeps as the trial's log but only
parses with the StdOut collector. Run it directly, e.g.
``python examples/train_reporting.py --lr=0.3 --report=text-file --metrics-path=/tmp/m.log``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

N_CLASSES = 3
N_FEATURES = 8
N_SAMPLES = 600
REPORTS = ("text-file", "json-file", "tfevent", "push", "csv")

Reporter = Callable[[int, float, float], None]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, required=True, help="learning rate")
    p.add_argument("--num-epochs", type=int, default=10)
    p.add_argument("--report", choices=REPORTS, required=True)
    p.add_argument("--metrics-path", default="", help="file or directory for the metrics")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args(argv)
    if args.lr <= 0 or args.num_epochs < 1:
        p.error("--lr must be > 0 and --num-epochs >= 1")
    if args.report != "push" and not args.metrics_path:
        p.error(f"--report={args.report} needs --metrics-path")
    return args


def make_data(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.2, (N_CLASSES, N_FEATURES))
    y = rng.integers(0, N_CLASSES, N_SAMPLES)
    x = centers[y] + rng.normal(0.0, 1.5, (N_SAMPLES, N_FEATURES))
    split = int(0.7 * N_SAMPLES)
    return x[:split], y[:split], x[split:], y[split:]


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _append(path: str, text: str) -> None:
    # One open/close per epoch: the collector follows the file while the trial runs.
    with open(path, "a", encoding="utf-8") as f:
        f.write(text)


def make_reporter(report: str, path: str) -> tuple[Reporter, Callable[[], None]]:
    """The per-epoch report function for ``report``, and what to call at the end."""
    if report == "text-file":
        return (
            lambda epoch, loss, acc: _append(
                path, f"{now_rfc3339()} epoch={epoch} loss={loss:.4f} accuracy={acc:.4f}\n"
            ),
            lambda: None,
        )
    if report == "json-file":
        return (
            lambda epoch, loss, acc: _append(
                path,
                json.dumps(
                    {
                        "epoch": epoch,
                        "loss": f"{loss:.4f}",
                        "accuracy": f"{acc:.4f}",
                        "timestamp": now_rfc3339(),
                    }
                )
                + "\n",
            ),
            lambda: None,
        )
    if report == "csv":
        _append(path, "epoch,loss,accuracy\n")
        return (
            lambda epoch, loss, acc: _append(path, f"{epoch},{loss:.4f},{acc:.4f}\n"),
            lambda: None,
        )
    if report == "tfevent":
        from tensorboardX import SummaryWriter

        train = SummaryWriter(os.path.join(path, "train"))
        test = SummaryWriter(os.path.join(path, "test"))

        def events(epoch: int, loss: float, acc: float) -> None:
            test.add_scalar("loss", loss, epoch)
            test.add_scalar("accuracy", acc, epoch)
            train.add_scalar("accuracy", min(1.0, acc + 0.02), epoch)  # not collected
            test.flush()

        def close() -> None:
            train.close()
            test.close()

        return events, close
    try:
        from kubeflow.katib import report_metrics  # the Kubeflow SDK, in a cluster
    except ImportError:
        from katib import report_metrics  # type: ignore[no-redef]  # this package, locally

    def push(epoch: int, loss: float, acc: float) -> None:
        report_metrics({"loss": round(loss, 4), "accuracy": round(acc, 4)})

    return push, lambda: None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    x_train, y_train, x_val, y_val = make_data(args.seed)
    report, close = make_reporter(args.report, args.metrics_path)
    w = np.zeros((N_FEATURES, N_CLASSES))
    b = np.zeros(N_CLASSES)
    onehot = np.eye(N_CLASSES)[y_train]
    print(f"softmax regression: lr={args.lr:g} epochs={args.num_epochs} report={args.report}")
    for epoch in range(1, args.num_epochs + 1):
        p = softmax(x_train @ w + b)
        grad = p - onehot
        w -= args.lr * (x_train.T @ grad / len(y_train) + 1e-3 * w)
        b -= args.lr * grad.mean(axis=0)
        pv = softmax(x_val @ w + b)
        loss = float(-np.log(pv[np.arange(len(y_val)), y_val] + 1e-12).mean())
        acc = float((pv.argmax(axis=1) == y_val).mean())
        report(epoch, loss, acc)
        print(f"epoch {epoch} done", flush=True)
    close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
