"""Logistic regression on the breast-cancer data set with a choice of optimizers.

Katib trial program for ``custom-filter.yaml``. Metrics are written through
Python ``logging`` in the format used by Katib's own example trainers::

    2024-03-04T17:55:08Z INFO     {metricName: loss, metricValue: 0.3634};{metricName: acc...

(one ``{metricName: ..., metricValue: ...}`` group per metric, ``;``-separated).

Katib's default ``name=value`` filter does not match these lines, so the
Experiment sets ``metricsCollectorSpec.source.filter.metricsFormat``.

The model and the optimizers (sgd, momentum, nesterov, adam) are written in
numpy. ``--optimizer=lbfgs`` is accepted on the command line but raises
NotImplementedError, so trials that draw it fail (exit status 1): the
Experiment shows how ``maxFailedTrialCount`` tolerates a few failed trials.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import numpy as np
from sklearn.datasets import load_breast_cancer

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "lbfgs")

log = logging.getLogger("train_logging")


def setup_logging() -> None:
    logging.Formatter.converter = time.gmtime  # the trailing Z means UTC
    logging.basicConfig(
        format="%(asctime)s %(levelname)-8s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%SZ",
        level=logging.INFO,
        stream=sys.stdout,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate")
    p.add_argument("--num-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.lr <= 0 or args.num_epochs < 1 or args.batch_size < 1:
        p.error("--lr must be > 0, --num-epochs and --batch-size >= 1")
    return args


class Optimizer:
    """Minimal first-order optimizers over one flat parameter vector."""

    def __init__(self, name: str, lr: float, size: int) -> None:
        if name == "lbfgs":
            raise NotImplementedError(
                "optimizer 'lbfgs' needs full-batch line searches and is not "
                "implemented in this mini-batch trainer"
            )
        self.name, self.lr, self.t = name, lr, 0
        self.m = np.zeros(size)
        self.v = np.zeros(size)

    def lookahead(self, params: np.ndarray) -> np.ndarray:
        """Point at which to evaluate the gradient (differs only for nesterov)."""
        return params - 0.9 * self.lr * self.m if self.name == "nesterov" else params

    def step(self, params: np.ndarray, grad: np.ndarray) -> np.ndarray:
        self.t += 1
        if self.name == "sgd":
            return params - self.lr * grad
        if self.name in ("momentum", "nesterov"):
            self.m = 0.9 * self.m + grad
            return params - self.lr * self.m
        # adam
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad * grad
        m_hat = self.m / (1 - 0.9**self.t)
        v_hat = self.v / (1 - 0.999**self.t)
        return params - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def predict(params: np.ndarray, x: np.ndarray) -> np.ndarray:
    z = x @ params[:-1] + params[-1]
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def evaluate(params: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    p = np.clip(predict(params, x), 1e-7, 1 - 1e-7)
    loss = -float(np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    accuracy = float(np.mean((p >= 0.5) == y))
    return loss, accuracy


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging()
    started = time.perf_counter()

    x, y = load_breast_cancer(return_X_y=True)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(y))
    x, y = x[perm], y[perm].astype(float)
    split = int(0.8 * len(y))
    mean, std = x[:split].mean(axis=0), x[:split].std(axis=0) + 1e-12
    x = (x - mean) / std
    x_train, y_train, x_val, y_val = x[:split], y[:split], x[split:], y[split:]

    log.info(
        "optimizer=%s lr=%g epochs=%d batch=%d train=%d val=%d",
        args.optimizer,
        args.lr,
        args.num_epochs,
        args.batch_size,
        len(y_train),
        len(y_val),
    )
    params = np.zeros(x.shape[1] + 1)
    opt = Optimizer(args.optimizer, args.lr, params.size)

    for epoch in range(1, args.num_epochs + 1):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            err = predict(opt.lookahead(params), xb) - yb
            grad = np.append(xb.T @ err, err.sum()) / len(idx)
            params = opt.step(params, grad)
        loss, accuracy = evaluate(params, x_val, y_val)
        train_loss, _ = evaluate(params, x_train, y_train)
        log.info("Epoch %d/%d train_loss %.4f", epoch, args.num_epochs, train_loss)
        log.info(
            "{metricName: loss, metricValue: %.4f};{metricName: accuracy, metricValue: %.4f}",
            loss,
            accuracy,
        )

    log.info("done in %.2fs", time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
