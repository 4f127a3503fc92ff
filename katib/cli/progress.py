"""The live view of `katib run`: trials done, running and failed, and the best so far."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from katib.api.models import Experiment, Trial
from katib.controller.observation import objective_value
from katib.controller.reconcile import PassResult


def summary(experiment: Experiment, trials: list[Trial]) -> str:
    st = experiment.status
    done = sum(1 for t in trials if t.is_completed)
    total = experiment.spec.max_trial_count
    failed = (st.trials_failed or 0) + (st.trial_metrics_unavailable or 0) if st else 0
    running = (st.trials_running or 0) + (st.trials_pending or 0) if st else 0
    best = "-"
    if st and st.current_optimal_trial and st.current_optimal_trial.best_trial_name:
        name = st.current_optimal_trial.best_trial_name
        value = next((objective_value(experiment, t) for t in trials if t.name == name), None)
        best = f"{value:.6g} ({name})" if value is not None else name
    return (
        f"trials {done}/{total if total is not None else '∞'} done, {running} running, "
        f"{failed} failed; best {best}"
    )


class Progress:
    """A rich live line on a terminal; plain lines (only on change) elsewhere."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet
        self._live: Live | None = None
        self._last = ""

    def __enter__(self) -> Progress:
        if self.console.is_terminal and not self.quiet:
            self._live = Live(
                Text("starting..."), console=self.console, refresh_per_second=8, transient=False
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)

    def notice(self, message: str) -> None:
        self.console.print(f"[yellow]{message}[/yellow]", highlight=False)

    def update(self, result: PassResult) -> None:
        if self.quiet:
            return
        line = summary(result.experiment, result.trials)
        if self._live is not None:
            table = Table.grid(padding=(0, 1))
            table.add_row(Text(result.experiment.name, style="bold"), Text(line))
            self._live.update(table)
        elif line != self._last:
            self.console.print(line, highlight=False)
        self._last = line
