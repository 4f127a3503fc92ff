"""Plotly figures of an experiment's trials: history, parallel coordinates, importance.

Each builder takes the stored trials (katib.api.models.Trial, or rows already made
by katib.sdk.trial_rows) and the objective, and returns a plotly Figure; nothing here
touches storage, so the SDK and the server draw the same figures. plotly is imported
when a figure is built, so `import katib` does not pay for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from katib.api.models import ObjectiveSpec, ObjectiveType, ParameterSpec, Trial
from katib.sdk.trial_rows import TrialRow, completed_rows, rows_from_trials

if TYPE_CHECKING:
    import plotly.graph_objects as go


def _rows(
    trials: Sequence[Trial] | Sequence[TrialRow],
    objective: ObjectiveSpec,
    parameters: Sequence[ParameterSpec] | None,
) -> list[TrialRow]:
    rows = [t for t in trials if isinstance(t, TrialRow)]
    rows += rows_from_trials([t for t in trials if isinstance(t, Trial)], objective, parameters)
    return rows


def _go() -> Any:
    try:
        import plotly.graph_objects as go
    except ImportError:  # pragma: no cover - plotly is a dependency
        from katib.errors import InvalidArgumentError

        raise InvalidArgumentError("plots need plotly: pip install plotly") from None
    return go


def _title(objective: ObjectiveSpec) -> str:
    return f"{objective.objective_metric_name or 'objective'} ({objective.type or 'maximize'})"


def history_figure(
    trials: Sequence[Trial] | Sequence[TrialRow],
    objective: ObjectiveSpec,
    parameters: Sequence[ParameterSpec] | None = None,
) -> go.Figure:
    """Objective value of each succeeded trial in creation order, and the best so far."""
    go = _go()
    rows = completed_rows(_rows(trials, objective, parameters))
    maximize = objective.type == ObjectiveType.MAXIMIZE
    numbers = list(range(1, len(rows) + 1))
    values = [r.value for r in rows]
    best: list[float] = []
    for value in values:
        assert value is not None
        if not best:
            best.append(value)
        else:
            best.append(max(best[-1], value) if maximize else min(best[-1], value))
    hover = [
        "<br>".join([r.name, *(f"{k}={v}" for k, v in r.params.items())]) for r in rows
    ]
    figure = go.Figure()
    figure.add_trace(
        go.Scatter(
            x=numbers, y=values, mode="markers", name="trial", text=hover, hoverinfo="text+y"
        )
    )
    figure.add_trace(go.Scatter(x=numbers, y=best, mode="lines", name="best so far"))
    figure.update_layout(
        title=f"Optimization history: {_title(objective)}",
        xaxis_title="trial",
        yaxis_title=objective.objective_metric_name or "objective",
    )
    return figure


def parallel_coordinates_figure(
    trials: Sequence[Trial] | Sequence[TrialRow],
    objective: ObjectiveSpec,
    parameters: Sequence[ParameterSpec] | None = None,
) -> go.Figure:
    """One line per succeeded trial through every parameter axis and the objective."""
    go = _go()
    rows = completed_rows(_rows(trials, objective, parameters))
    names = sorted({name for row in rows for name in row.params})
    dimensions: list[dict[str, Any]] = []
    for name in names:
        values = [row.params.get(name) for row in rows]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            dimensions.append({"label": name, "values": values})
            continue
        labels = sorted({str(v) for v in values})
        index = {label: i for i, label in enumerate(labels)}
        dimensions.append(
            {
                "label": name,
                "values": [index[str(v)] for v in values],
                "tickvals": list(range(len(labels))),
                "ticktext": labels,
            }
        )
    metric = objective.objective_metric_name or "objective"
    values = [row.value for row in rows]
    dimensions.append({"label": metric, "values": values})
    figure = go.Figure(
        go.Parcoords(
            line={
                "color": values,
                "colorscale": "Viridis",
                "showscale": True,
                "reversescale": objective.type == ObjectiveType.MINIMIZE,
            },
            dimensions=dimensions,
        )
    )
    figure.update_layout(title=f"Parallel coordinates: {_title(objective)}")
    return figure


def importance_figure(
    trials: Sequence[Trial] | Sequence[TrialRow],
    objective: ObjectiveSpec,
    parameters: Sequence[ParameterSpec] | None = None,
) -> go.Figure:
    """Horizontal bars of fANOVA importance (katib.sdk.importance), most important on top."""
    from katib.sdk.importance import param_importances

    go = _go()
    scores = param_importances(
        _rows(trials, objective, parameters),
        str(objective.type or ObjectiveType.MAXIMIZE),
        objective.objective_metric_name or "",
        parameters,
    )
    names = list(reversed(scores))
    figure = go.Figure(
        go.Bar(
            x=[scores[n] for n in names],
            y=names,
            orientation="h",
            text=[f"{scores[n]:.2f}" for n in names],
            textposition="auto",
        )
    )
    figure.update_layout(
        title=f"Parameter importance: {_title(objective)}",
        xaxis_title="importance (fANOVA)",
        yaxis_title="parameter",
    )
    return figure
