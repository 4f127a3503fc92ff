"""Is ours worse than the library, beyond noise? Many seeds, one difference with its error.

    python bench/tpe_parity.py --problem mixed --pair tpe --seeds 100 --first-seed 0
    python bench/tpe_parity.py --problem branin --pair multivariate-tpe --seeds 100

Runs bench/quality.py's runners ("ours" and the optuna baseline it stands for) on
seeds first..first+seeds-1 and prints, at budget/2 and budget, the mean regret of
each with its standard error and a bootstrap 95% interval of (ours - optuna). The
two runs of a seed share nothing but the seed number (different random streams),
so the comparison is unpaired; 10 seeds are far too few for these heavy-tailed
regrets (a TPE run that settles on the wrong category stays there for 40 trials).
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from quality import PROBLEMS, one_run

PAIRS = {
    "tpe": ("ours: tpe", "optuna TPESampler"),
    "multivariate-tpe": ("ours: multivariate-tpe", "optuna TPESampler(multivariate)"),
}


def _regrets(task: tuple[str, str, int, int]) -> tuple[float, float]:
    label, problem, seed, budget = task
    best, _ = one_run(label, problem, seed, budget)
    optimum = PROBLEMS[problem].optimum
    return best[budget // 2 - 1] - optimum, best[-1] - optimum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problem", choices=list(PROBLEMS), default="mixed")
    parser.add_argument("--pair", choices=list(PAIRS), default="tpe")
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--budget", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results: dict[str, np.ndarray] = {}
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for label in PAIRS[args.pair]:
            tasks = [(label, args.problem, s, args.budget) for s in seeds]
            results[label] = np.array(list(pool.map(_regrets, tasks)))
    ours, theirs = (results[label] for label in PAIRS[args.pair])
    boot = np.random.default_rng(0)
    print(f"{args.problem}, seeds {seeds.start}..{seeds.stop - 1}, budget {args.budget}")
    for column, at in ((0, args.budget // 2), (1, args.budget)):
        a, b = ours[:, column], theirs[:, column]
        diffs = [boot.choice(a, a.size).mean() - boot.choice(b, b.size).mean()
                 for _ in range(2000)]
        low, high = np.quantile(diffs, [0.025, 0.975])
        se_a = statistics.stdev(a) / a.size**0.5
        se_b = statistics.stdev(b) / b.size**0.5
        print(f"@{at}: {PAIRS[args.pair][0]} {a.mean():.4f} ± {se_a:.4f} (se), "
              f"{PAIRS[args.pair][1]} {b.mean():.4f} ± {se_b:.4f}; "
              f"ours - optuna {a.mean() - b.mean():+.4f}, 95% CI [{low:+.4f}, {high:+.4f}]")


if __name__ == "__main__":
    main()
