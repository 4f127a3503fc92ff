"""Fit a linear regression with mini-batch gradient descent, in plain numpy.

Katib trial program for ``grid-numpy.yaml``. The data are synthetic and drawn
from a fixed seed, so every run with the same flags prints the same numbers.
One metrics line is printed per epoch in Katib's default TEXT format::

    epoch 4: loss=0.0312 train-loss=0.0298 r2=0.9871

where ``loss`` is half the validation mean squared error.

Gradient descent on this problem is only stable for a learning rate below
about 0.85 (2 / the largest eigenvalue of the feature covariance). Above that
the weights blow up; the script notices, prints ``diverged`` and exits with
status 1, so Katib marks the trial Failed.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

N_SAMPLES = 800
N_FEATURES = 12
NOISE = 0.15
# Per-feature standard deviations: the largest (1.55**2 ~= 2.4) sets the
# stability limit of plain gradient descent, lr < 2 / 2.4 ~= 0.83.
FEATURE_SCALES = np.linspace(0.4, 1.55, N_FEATURES)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, required=True, help="learning rate")
    p.add_argument("--num-epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--l2", type=float, default=1e-3, help="ridge penalty")
    p.add_argument("--seed", type=int, default=42, help="seed for data and shuffling")
    args = p.parse_args(argv)
    if args.lr <= 0 or args.num_epochs < 1 or args.batch_size < 1:
        p.error("--lr must be > 0, --num-epochs and --batch-size >= 1")
    return args


def make_data(seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, N_FEATURES)) * FEATURE_SCALES
    true_w = rng.uniform(-2.0, 2.0, N_FEATURES)
    y = x @ true_w + 0.5 + NOISE * rng.standard_normal(N_SAMPLES)
    split = int(0.75 * N_SAMPLES)
    return x[:split], y[:split], x[split:], y[split:]


def half_mse(x: np.ndarray, y: np.ndarray, w: np.ndarray, b: float) -> float:
    r = x @ w + b - y
    return 0.5 * float(r @ r) / len(y)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    x_train, y_train, x_val, y_val = make_data(args.seed)
    rng = np.random.default_rng(args.seed + 1)
    w = np.zeros(N_FEATURES)
    b = 0.0
    initial = half_mse(x_val, y_val, w, b)
    var_y = float(np.var(y_val))
    print(
        f"linear regression: lr={args.lr:g} epochs={args.num_epochs} "
        f"batch={args.batch_size} train={len(y_train)} val={len(y_val)}",
        flush=True,
    )

    for epoch in range(1, args.num_epochs + 1):
        order = rng.permutation(len(y_train))
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, len(order), args.batch_size):
                idx = order[start : start + args.batch_size]
                xb, yb = x_train[idx], y_train[idx]
                r = xb @ w + b - yb
                w = w - args.lr * (xb.T @ r / len(idx) + args.l2 * w)
                b = b - args.lr * float(r.mean())
            val = half_mse(x_val, y_val, w, b)
            train = half_mse(x_train, y_train, w, b)
        if not math.isfinite(val) or val > 1e3 * initial:
            # Print what a user would see in the log, then fail the trial.
            print(f"epoch {epoch}: loss={val:.4g} train-loss={train:.4g}", flush=True)
            print(
                f"diverged at epoch {epoch}: validation loss {val:.3g} "
                f"(started at {initial:.3g}); learning rate {args.lr:g} is too large",
                file=sys.stderr,
                flush=True,
            )
            return 1
        r2 = 1.0 - 2.0 * val / var_y
        print(f"epoch {epoch}: loss={val:.4f} train-loss={train:.4f} r2={r2:.4f}", flush=True)

    print(f"done in {time.perf_counter() - started:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
