"""Train a linear classifier with SGD on scikit-learn's bundled digits data set.

Katib trial program for ``random-sklearn.yaml``. It takes its hyperparameters
as ``--name=value`` command-line flags and prints one metrics line per epoch
in Katib's default TEXT format (``name=value``), for example::

    epoch 3: Train-accuracy=0.9512 Validation-accuracy=0.9361 loss=0.2210

No network access is needed: ``load_digits`` ships inside scikit-learn.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

LOSSES = ("hinge", "log_loss", "modified_huber")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lr", type=float, default=0.01, help="initial learning rate (eta0)")
    p.add_argument("--alpha", type=float, default=1e-4, help="regularisation strength")
    p.add_argument("--loss", choices=LOSSES, default="log_loss", help="SGD loss function")
    p.add_argument("--num-epochs", type=int, default=10, help="passes over the training set")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.lr <= 0 or args.alpha < 0 or args.num_epochs < 1:
        p.error("--lr must be > 0, --alpha >= 0 and --num-epochs >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    print(
        # No "name=value" pairs here: Katib's default filter would read "loss=log_loss"
        # as a loss metric with an empty value.
        f"Training SGDClassifier with loss function {args.loss}, eta0 {args.lr:g}, "
        f"alpha {args.alpha:g} for {args.num_epochs} epochs",
        flush=True,
    )

    x, y = load_digits(return_X_y=True)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.25, random_state=args.seed, stratify=y
    )
    scaler = StandardScaler().fit(x_train)
    x_train, x_val = scaler.transform(x_train), scaler.transform(x_val)
    classes = np.unique(y)

    clf = SGDClassifier(
        loss=args.loss,
        alpha=args.alpha,
        learning_rate="invscaling",
        eta0=args.lr,
        power_t=0.25,
        random_state=args.seed,
    )
    rng = np.random.default_rng(args.seed)
    for epoch in range(1, args.num_epochs + 1):
        order = rng.permutation(len(x_train))
        clf.partial_fit(x_train[order], y_train[order], classes=classes)
        train_acc = clf.score(x_train, y_train)
        val_acc = clf.score(x_val, y_val)
        line = f"epoch {epoch}: Train-accuracy={train_acc:.4f} Validation-accuracy={val_acc:.4f}"
        if args.loss != "hinge":  # hinge has no probabilities, so no log-loss
            proba = clf.predict_proba(x_val)
            line += f" loss={log_loss(y_val, proba, labels=classes):.4f}"
        print(line, flush=True)

    print(f"done in {time.perf_counter() - started:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
