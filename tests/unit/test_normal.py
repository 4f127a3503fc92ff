"""suggestion_services.normal against scipy.special, which it replaces in TPE.

The replacement exists to keep scipy.special out of service start; these tests
pin it to scipy's values over dense grids, both tails and the special values.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from suggestion_services import normal

sp = pytest.importorskip("scipy.special")

FUNCS = [
    pytest.param(normal.ndtr, sp.ndtr, id="ndtr"),
    pytest.param(normal.log_ndtr, sp.log_ndtr, id="log_ndtr"),
    pytest.param(normal.ndtri_exp, sp.ndtri_exp, id="ndtri_exp"),
]
Func = Callable[..., np.ndarray]

# x over [-1e4, 40]: dense near 0, log-spaced magnitudes out to both ends, and
# the branch edges (the tail series below -37, erfc turning subnormal at -37.5).
X = np.unique(
    np.concatenate(
        [
            np.linspace(-50.0, 40.0, 90_001),
            -np.logspace(-300, 4, 20_000),
            np.logspace(-300, math.log10(40.0), 20_000),
            np.nextafter(-37.0, [-np.inf, np.inf]),
            [-37.0, -37.5, -38.5, -1e4, 0.0, 1e-320, -1e-320],
        ]
    )
)
# y over [-1e5, -1e-300] (log-spaced magnitudes), the values near 0 and the
# branch edges (log 1/2, the tail below -700, exp(y) subnormal below -708).
Y = np.concatenate(
    [
        -np.logspace(-300, 5, 60_001),
        [-1e-20, -1e-10, -0.5, -0.69, math.log(0.5), -0.6931471805599454],
        np.nextafter(math.log(0.5), [-np.inf, np.inf]),
        [-700.0, -700.0001, -699.9999, -708.0, -709.0, -745.0, -1e-320, -5e-324],
    ]
)


def rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """Largest |got - ref| / |ref|, the measure the accuracy targets are set in."""
    return float(np.max(np.abs(got - ref) / np.abs(ref)))


def test_ndtr_matches_scipy() -> None:
    got, ref = normal.ndtr(X), sp.ndtr(X)
    normal_range = ref > 1e-300
    assert rel_err(got[normal_range], ref[normal_range]) <= 1e-13
    # Subnormal results (x in about [-38.5, -37.5]) carry few bits: absolute.
    assert np.max(np.abs(got[~normal_range] - ref[~normal_range])) <= 1e-300
    assert np.all(got[X < -38.6] == 0.0)


def test_log_ndtr_matches_scipy() -> None:
    got, ref = normal.log_ndtr(X), sp.log_ndtr(X)
    big = np.abs(ref) > 1e-300
    assert rel_err(got[big], ref[big]) <= 1e-13
    # For x > 37.5 log Phi(x) = -Phi(-x) is subnormal or 0, where scipy flushes
    # to 0 sooner than the correctly rounded value: absolute.
    assert np.max(np.abs(got[~big] - ref[~big])) <= 1e-300
    assert np.all(got[~big] <= 0.0)


@pytest.mark.parametrize("x", [-37.0001, -40.0, -100.0, -1000.0, -1e4, -1e6, -1e100])
def test_log_ndtr_far_tail(x: float) -> None:
    ref = float(sp.log_ndtr(x))
    assert abs(float(normal.log_ndtr(x)) - ref) <= 1e-14 * abs(ref)


def test_log_ndtr_at_minus_1000() -> None:
    """-x^2/2 - log|x| - log sqrt(2 pi) + log(1 - 1/x^2 + ...), as scipy gives it."""
    assert float(normal.log_ndtr(-1000.0)) == pytest.approx(-500007.8266948122, rel=1e-15)


def test_extremes_of_the_float_range() -> None:
    """Where x^2 or -2y overflow: scipy's values, and no warnings."""
    big = np.finfo(np.float64).max
    x = np.array([-1.3e154, -1.5e154, -1.8e154, -1.9e154, -1e200, -big])
    y = np.array([-1e300, -1e307, -1e308, -big / 2, -big])
    with np.errstate(all="raise", under="ignore"):
        got_x, got_y = normal.log_ndtr(x), normal.ndtri_exp(y)
    np.testing.assert_allclose(got_x, sp.log_ndtr(x), rtol=1e-14, atol=0.0)
    np.testing.assert_allclose(got_y, sp.ndtri_exp(y), rtol=1e-14, atol=0.0)


def test_ndtri_exp_matches_scipy() -> None:
    got, ref = normal.ndtri_exp(Y), sp.ndtri_exp(Y)
    assert np.max(np.abs(got - ref) / np.maximum(1.0, np.abs(ref))) <= 1e-12


def test_ndtri_exp_solves_log_ndtr() -> None:
    """Independent of scipy's ndtri_exp (which is the less exact of the two in
    the far tail): scipy's log_ndtr of the result gives back y."""
    y = -np.logspace(-2, 5, 5_001)
    assert rel_err(sp.log_ndtr(normal.ndtri_exp(y)), y) <= 1e-14


def test_round_trip() -> None:
    x = np.linspace(-30.0, 8.0, 100_001)
    back = normal.ndtri_exp(normal.log_ndtr(x))
    assert np.max(np.abs(back - x) / np.maximum(1.0, np.abs(x))) <= 1e-12


@pytest.mark.parametrize(
    ("func", "values", "expected"),
    [
        (normal.ndtr, [-np.inf, np.inf, np.nan, 0.0, -0.0], [0.0, 1.0, np.nan, 0.5, 0.5]),
        (
            normal.log_ndtr,
            [-np.inf, np.inf, np.nan, 0.0, 1e3],
            [-np.inf, 0.0, np.nan, math.log(0.5), 0.0],
        ),
        (
            normal.ndtri_exp,
            [0.0, -0.0, -np.inf, 1.0, 1e-300, np.inf, np.nan, math.log(0.5)],
            [np.inf, np.inf, -np.inf, np.nan, np.nan, np.nan, np.nan, 0.0],
        ),
    ],
    ids=["ndtr", "log_ndtr", "ndtri_exp"],
)
def test_special_values(func: Func, values: list[float], expected: list[float]) -> None:
    np.testing.assert_array_equal(func(np.array(values)), np.array(expected))
    # One by one too: each takes the branch a lone element of its kind takes.
    for v, e in zip(values, expected, strict=True):
        np.testing.assert_array_equal(func(v), e)


@pytest.mark.parametrize(("ours", "ref"), FUNCS)
def test_special_values_mixed_with_ordinary_ones(ours: Func, ref: Func) -> None:
    """NaN and infinities among ordinary values take the masked paths."""
    v = np.array([np.nan, -np.inf, np.inf, 0.0, -1e-300, -0.3, -0.9, -5.0, -800.0, 2.0, -50.0])
    np.testing.assert_allclose(ours(v), ref(v), rtol=1e-13, atol=0.0)


@pytest.mark.parametrize(("ours", "ref"), FUNCS)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (7,), (3, 4), (2, 0, 3), (2, 3, 5)])
def test_shape_and_dtype(ours: Func, ref: Func, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(len(shape) * 10 + sum(shape))
    v = -np.abs(rng.normal(scale=3.0, size=shape))
    got = ours(v)
    assert isinstance(got, np.ndarray)
    assert got.shape == v.shape
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref(v), rtol=1e-13, atol=0.0)


@pytest.mark.parametrize(("ours", "ref"), FUNCS)
@pytest.mark.parametrize("value", [-1.5, -0.25, -750.0, -40.0, 0, -3])
def test_python_scalars_give_0d_arrays(ours: Func, ref: Func, value: float) -> None:
    got = ours(value)
    assert isinstance(got, np.ndarray)
    assert got.shape == ()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref(value), rtol=1e-13, atol=0.0)


@pytest.mark.parametrize(("ours", "ref"), FUNCS)
def test_input_is_not_modified(ours: Func, ref: Func) -> None:
    v = np.array([-800.0, -40.0, -2.0, -0.1, np.nan])
    before = v.copy()
    ours(v)
    np.testing.assert_array_equal(v, before)
    ours(v[::2])  # non-contiguous input
    np.testing.assert_array_equal(v, before)
    np.testing.assert_allclose(ours(v[::2]), ref(v[::2]), rtol=1e-13, atol=0.0)


@pytest.mark.parametrize(("ours", "ref"), FUNCS)
def test_one_signed_arrays(ours: Func, ref: Func) -> None:
    """log_ndtr's shortcuts for all-negative and all-positive arrays."""
    v = np.linspace(0.01, 9.0, 901)
    for arr in (v, -v):
        np.testing.assert_allclose(ours(arr), ref(arr), rtol=1e-13, atol=0.0)


def test_no_floating_point_warnings() -> None:
    """Tails and special values must not warn (log of 0, inf - inf, ...)."""
    with np.errstate(all="raise", under="ignore"):  # numpy ignores underflow by default
        normal.ndtr(X)
        normal.log_ndtr(X)
        normal.log_ndtr(np.array([-np.inf, np.inf, np.nan, -1e300, 1e300]))
        normal.ndtri_exp(Y)
        normal.ndtri_exp(np.array([0.0, -np.inf, np.inf, np.nan, 1.0, -1e300, -1.7e308]))
