"""The suggestion server's per-call shortcuts give what the plain conversions give.

TrialCache reuses the previous request's records per experiment (stream), the
servicer reuses parsed experiments, and candidates are rounded without a string
round trip; each must be invisible in the results.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from katib.apis.v1beta1 import api_pb2
from katib.errors import InvalidArgumentError
from katib.testing.algorithms import experiment_to_proto, make_experiment
from suggestion_services.experiment_cache import clear_all_caches
from suggestion_services.search_space import ParameterSpec, format_double, round_doubles
from suggestion_services.server import (
    LazyGetSuggestionsRequest,
    SuggestionServicer,
    TrialCache,
    trial_from_proto,
)


def trial_bytes(i: int, value: str = "0.5", condition: int = api_pb2.TrialStatus.SUCCEEDED
                ) -> bytes:
    trial = api_pb2.Trial(name=f"t{i}")
    trial.spec.parameter_assignments.assignments.add(name="x", value=str(i / 7))
    trial.status.condition = condition  # type: ignore[assignment]
    trial.status.observation.metrics.add(name="objective", value=value)
    return trial.SerializeToString()


def plain(raws: list[bytes]) -> list[object]:
    return [trial_from_proto(api_pb2.Trial.FromString(r), "objective") for r in raws]


def test_stream_conversion_equals_plain_conversion_through_edits() -> None:
    cache = TrialCache()
    rng = random.Random(4)
    history = [trial_bytes(i) for i in range(30)]
    for step in range(200):
        roll = rng.random()
        if roll < 0.5:
            history.append(trial_bytes(100 + step))
        elif roll < 0.65 and history:
            history[rng.randrange(len(history))] = trial_bytes(rng.randrange(500), "0.9")
        elif roll < 0.75 and history:
            del history[rng.randrange(len(history))]
        elif roll < 0.85:
            rng.shuffle(history)
        elif roll < 0.9:
            history = history[: rng.randrange(len(history) + 1)]
        # copies, as a new request brings them; sometimes another experiment in between
        request = [bytes(bytearray(r)) for r in history]
        assert cache.convert(request, "objective", "exp") == plain(request)
        if roll > 0.95:
            other = [trial_bytes(900 + i) for i in range(5)]
            assert cache.convert(other, "objective", "other") == plain(other)


def test_stream_reuses_the_records_of_the_unchanged_prefix() -> None:
    cache = TrialCache()
    first = [trial_bytes(i) for i in range(10)]
    before = cache.convert(first, "objective", "exp")
    after = cache.convert([bytes(bytearray(r)) for r in first] + [trial_bytes(10)],
                          "objective", "exp")
    assert all(a is b for a, b in zip(before, after[:10], strict=False))
    assert after[10] == plain([trial_bytes(10)])[0]


def test_stream_does_not_keep_a_bad_request() -> None:
    cache = TrialCache()
    good = [trial_bytes(i) for i in range(3)]
    cache.convert(good, "objective", "exp")
    with pytest.raises(InvalidArgumentError, match=r"trials\[3\] cannot be parsed"):
        cache.convert([*good, b"\xff\xff"], "objective", "exp")
    assert cache.convert(good, "objective", "exp") == plain(good)


def test_streams_are_bounded() -> None:
    cache = TrialCache(max_streams=3)
    for i in range(10):
        cache.convert([trial_bytes(i)], "objective", f"exp-{i}")
    assert len(cache._last) == 3


def test_round_doubles_equals_format_double() -> None:
    rng = np.random.default_rng(2)
    values = [*rng.uniform(-10, 10, 500).tolist(), *(10.0 ** rng.uniform(-320, 308, 500)).tolist(),
              -0.0, 0.0, 5e-324, -1e-17, 1e-17, 0.1 + 0.2, math.inf, -math.inf, 1.0, 1e300]
    low, high = -1e301, 1e301
    expected = [min(max(float(format_double(v)), low), high) for v in values]
    got = round_doubles(values, low, high)
    assert [v.hex() for v in got] == [v.hex() for v in expected]  # -0.0 told from 0.0
    nan = round_doubles([math.nan], 0.0, 1.0)[0]
    assert math.isnan(nan)
    assert round_doubles([-3.0, 3.0], -1.0, 1.0) == [-1.0, 1.0]


class _Context:
    def abort(self, code: object, message: str) -> None:
        raise RuntimeError(code, message)


SPECS = [ParameterSpec("x", "double", "-10", "10"), ParameterSpec("y", "double", "-10", "10")]


def _request(exp_name: str, history: list[bytes], settings: dict[str, str] | None = None
             ) -> bytes:
    experiment = make_experiment("tpe", SPECS, settings or {"n_startup_trials": "3"},
                                 name=exp_name)
    message = experiment_to_proto(experiment)
    message.spec.objective.objective_metric_name = "objective"
    request = LazyGetSuggestionsRequest(current_request_number=1)
    request.experiment.CopyFrom(message)
    request.trials.extend(history)
    return request.SerializeToString()  # type: ignore[no-any-return]


def _history(n: int) -> list[bytes]:
    out = []
    for i in range(n):
        trial = api_pb2.Trial(name=f"h{i}")
        for name in ("x", "y"):
            value = str((i * 37 % 19) - 9)
            trial.spec.parameter_assignments.assignments.add(name=name, value=value)
        trial.status.condition = api_pb2.TrialStatus.SUCCEEDED  # type: ignore[assignment]
        trial.status.observation.metrics.add(name="objective", value=str(i % 5))
        out.append(trial.SerializeToString())
    return out


def test_servicer_answers_the_same_cold_warm_and_with_full_messages() -> None:
    """The experiment and trial caches, and a request built from full messages
    (re-serialized once), change nothing: replies equal a fresh servicer's."""
    requests = [_request("e1", _history(n)) for n in range(12)]
    requests += [_request("e2", _history(n), {"random_state": "5"}) for n in range(12)]
    warm = SuggestionServicer("tpe")
    warm_replies = [warm.GetSuggestions(LazyGetSuggestionsRequest.FromString(r), _Context())
                    for r in requests]
    full = SuggestionServicer("tpe")
    full_replies = [full.GetSuggestions(api_pb2.GetSuggestionsRequest.FromString(r), _Context())
                    for r in requests]
    assert full_replies == warm_replies
    for raw, reply in zip(requests, warm_replies, strict=True):
        clear_all_caches()
        cold = SuggestionServicer("tpe").GetSuggestions(LazyGetSuggestionsRequest.FromString(raw),
                                                        _Context())
        assert cold == reply
    assert warm.GetSuggestions(LazyGetSuggestionsRequest.FromString(requests[-1]),
                               _Context()) == warm_replies[-1]


def test_cached_experiment_settings_are_read_only() -> None:
    servicer = SuggestionServicer("tpe")
    request = LazyGetSuggestionsRequest.FromString(_request("e3", []))
    info = servicer._experiments.get(request.experiment, "tpe")
    assert servicer._experiments.get(request.experiment, "tpe") is info
    with pytest.raises(TypeError):
        info.settings["n_startup_trials"] = "1"  # type: ignore[index]
