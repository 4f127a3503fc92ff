"""Train a one-hidden-layer network on scikit-learn's digits data, in plain numpy.

Katib trial program for ``medianstop.yaml``. One metrics line is printed per
epoch in Katib's default TEXT format::

    epoch 4: loss=0.4123 Validation-accuracy=0.8861

Small learning rates learn slowly: their first epochs are well below those of
good runs, which is what the median stopping rule looks at. Without katib the
script simply runs all epochs, e.g. ``python examples/train_mlp_digits.py --lr=0.3``.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.datasets import load_digits


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, required=True, help="learning rate of SGD")
    p.add_argument("--momentum", type=float, default=0.0)
    p.add_argument("--hidden", type=int, default=64, help="hidden units")
    p.add_argument("--num-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.lr <= 0 or not 0 <= args.momentum < 1 or args.num_epochs < 1 or args.hidden < 1:
        p.error("--lr must be > 0, --momentum in [0, 1), --num-epochs and --hidden >= 1")
    return args


def forward(params: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hidden activations and class probabilities."""
    w1, b1, w2, b2 = params
    hidden = np.maximum(x @ w1 + b1, 0.0)
    logits = hidden @ w2 + b2
    logits -= logits.max(axis=1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(axis=1, keepdims=True)
    return hidden, probs


def evaluate(params: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    _, probs = forward(params, x)
    loss = -float(np.mean(np.log(probs[np.arange(len(y)), y] + 1e-12)))
    return loss, float(np.mean(probs.argmax(axis=1) == y))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    x, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(y))
    x, y = x[perm] / 16.0, y[perm]
    split = int(0.8 * len(y))
    x_train, y_train, x_val, y_val = x[:split], y[:split], x[split:], y[split:]
    params = [
        rng.normal(0.0, np.sqrt(2.0 / x.shape[1]), (x.shape[1], args.hidden)),
        np.zeros(args.hidden),
        rng.normal(0.0, np.sqrt(1.0 / args.hidden), (args.hidden, 10)),
        np.zeros(10),
    ]
    velocity = [np.zeros_like(p) for p in params]
    print(
        f"mlp: lr={args.lr:g} momentum={args.momentum:g} hidden={args.hidden} "
        f"epochs={args.num_epochs} train={len(y_train)} val={len(y_val)}",
        flush=True,
    )
    for epoch in range(1, args.num_epochs + 1):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), args.batch_size):
            idx = order[start : start + args.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            hidden, probs = forward(params, xb)
            dlogits = probs
            dlogits[np.arange(len(yb)), yb] -= 1.0
            dlogits /= len(yb)
            dhidden = (dlogits @ params[2].T) * (hidden > 0)
            grads = [xb.T @ dhidden, dhidden.sum(0), hidden.T @ dlogits, dlogits.sum(0)]
            for p, v, g in zip(params, velocity, grads, strict=True):
                v *= args.momentum
                v -= args.lr * g
                p += v
        loss, accuracy = evaluate(params, x_val, y_val)
        print(f"epoch {epoch}: loss={loss:.4f} Validation-accuracy={accuracy:.4f}", flush=True)
    print(f"done in {time.perf_counter() - started:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
