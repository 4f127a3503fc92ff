"""TuneResult: what tune() returns — the best trial, every trial, tables and plots.

A snapshot of the stored experiment and its trials when tune() returned; the same
data stays in storage (`katib get trials -e NAME`). In Jupyter it shows itself as an
HTML summary.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from katib.api.models import Experiment, ObjectiveSpec, ObjectiveType, Trial
from katib.controller.time_budget import is_warm_start
from katib.errors import InvalidArgumentError
from katib.sdk import plots
from katib.sdk.trial_rows import TrialRow, completed_rows, rows_from_trials

if TYPE_CHECKING:
    import pandas
    import plotly.graph_objects as go

#: Trials listed in the HTML summary (best first).
HTML_TOP = 10


class TuneResult:
    """The outcome of one tune() call."""

    def __init__(
        self,
        experiment: Experiment,
        trials: Sequence[Trial],
        *,
        data_dir: Path | None = None,
        db_url: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.data_dir = data_dir
        self.db_url = db_url
        self._all = list(trials)
        objective = experiment.spec.objective
        self.objective: ObjectiveSpec = objective or ObjectiveSpec()
        own = [t for t in self._all if not is_warm_start(t)]
        #: This experiment's trials in creation order (warm-start history left out).
        self.trials: list[TrialRow] = rows_from_trials(
            own, self.objective, experiment.spec.parameters
        )

    # --- identity and outcome ----------------------------------------------------------
    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def namespace(self) -> str:
        return self.experiment.namespace

    @property
    def condition(self) -> str:
        """Succeeded, Failed, or Running (tune() was interrupted)."""
        conditions = self.experiment.status.conditions if self.experiment.status else []
        for wanted in ("Succeeded", "Failed"):
            if any(c.type == wanted and c.status == "True" for c in conditions):
                return wanted
        return "Running"

    @property
    def reason(self) -> str:
        """Why it ended (e.g. ExperimentMaxTrialsReached, ExperimentTimeoutReached)."""
        conditions = self.experiment.status.conditions if self.experiment.status else []
        return (conditions[-1].reason or "") if conditions else ""

    @property
    def message(self) -> str:
        conditions = self.experiment.status.conditions if self.experiment.status else []
        return (conditions[-1].message or "") if conditions else ""

    # --- best ----------------------------------------------------------------------------
    @property
    def best_trial(self) -> TrialRow | None:
        """The controller's optimal trial (status.currentOptimalTrial), or None."""
        status = self.experiment.status
        optimal = status.current_optimal_trial if status else None
        if optimal is not None and optimal.best_trial_name:
            for row in self.trials:
                if row.name == optimal.best_trial_name:
                    return row
        scored = completed_rows(self.trials)
        if not scored:
            return None
        maximize = self.objective.type == ObjectiveType.MAXIMIZE
        pick = max if maximize else min
        return pick(scored, key=lambda r: r.value if r.value is not None else 0.0)

    @property
    def best_params(self) -> dict[str, Any] | None:
        best = self.best_trial
        return dict(best.params) if best else None

    @property
    def best_value(self) -> float | None:
        best = self.best_trial
        return best.value if best else None

    # --- tables and plots ----------------------------------------------------------------
    def trials_dataframe(self) -> pandas.DataFrame:
        """One row per trial: name, condition, value, params_<name>, metric columns, times."""
        try:
            import pandas
        except ImportError:
            raise InvalidArgumentError(
                "trials_dataframe() needs pandas: pip install pandas"
            ) from None
        records = []
        for row in self.trials:
            record: dict[str, Any] = {
                "name": row.name,
                "condition": row.condition,
                "value": row.value,
            }
            record.update({f"params_{k}": v for k, v in row.params.items()})
            record.update({k: v for k, v in row.metrics.items()})
            record.update(
                {
                    "start_time": row.start_time,
                    "completion_time": row.completion_time,
                    "message": row.message,
                }
            )
            records.append(record)
        return pandas.DataFrame.from_records(records)

    def plot_history(self) -> go.Figure:
        return plots.history_figure(self.trials, self.objective, self.experiment.spec.parameters)

    def plot_parallel_coordinates(self) -> go.Figure:
        return plots.parallel_coordinates_figure(
            self.trials, self.objective, self.experiment.spec.parameters
        )

    def plot_param_importances(self) -> go.Figure:
        return plots.importance_figure(
            self.trials, self.objective, self.experiment.spec.parameters
        )

    # --- display -------------------------------------------------------------------------
    def _counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.trials:
            counts[row.condition] = counts.get(row.condition, 0) + 1
        return counts

    def __repr__(self) -> str:
        counts = ", ".join(f"{k}: {v}" for k, v in sorted(self._counts().items()))
        return (
            f"TuneResult({self.namespace}/{self.name}, {self.condition} ({self.reason}), "
            f"trials {len(self.trials)} [{counts}], best_value={self.best_value!r}, "
            f"best_params={self.best_params!r})"
        )

    def _repr_html_(self) -> str:
        esc = html.escape
        metric = self.objective.objective_metric_name or "objective"
        counts = ", ".join(f"{esc(k)}: {v}" for k, v in sorted(self._counts().items()))
        best = self.best_trial
        head = [
            f"<b>{esc(self.namespace)}/{esc(self.name)}</b>: {esc(self.condition)} "
            f"({esc(self.reason)})",
            f"{len(self.trials)} trials ({counts})",
        ]
        if best is not None:
            params = ", ".join(f"{esc(k)}={esc(str(v))}" for k, v in best.params.items())
            head.append(
                f"best {esc(metric)} = <b>{esc(str(best.value))}</b> "
                f"({esc(best.name)}: {params})"
            )
        scored = completed_rows(self.trials)
        reverse = self.objective.type == ObjectiveType.MAXIMIZE
        scored.sort(key=lambda r: r.value if r.value is not None else 0.0, reverse=reverse)
        names = sorted({n for r in self.trials for n in r.params})
        rows = [
            "<tr><th>trial</th><th>condition</th>"
            + f"<th>{esc(metric)}</th>"
            + "".join(f"<th>{esc(n)}</th>" for n in names)
            + "</tr>"
        ]
        for row in scored[:HTML_TOP]:
            rows.append(
                f"<tr><td>{esc(row.name)}</td><td>{esc(row.condition)}</td>"
                f"<td>{esc(str(row.value))}</td>"
                + "".join(f"<td>{esc(str(row.params.get(n, '')))}</td>" for n in names)
                + "</tr>"
            )
        failed = [r for r in self.trials if r.condition in ("Failed", "MetricsUnavailable")]
        notes = "".join(
            f"<li>{esc(r.name)}: {esc(r.condition)}: {esc(r.message)}</li>" for r in failed[:5]
        )
        return (
            '<div class="katib-tune-result">'
            + "<br>".join(head)
            + "<table>"
            + "".join(rows)
            + "</table>"
            + (f"<ul>{notes}</ul>" if notes else "")
            + "</div>"
        )
