"""How the metrics collector parses and applies early-stopping rules (Katib's sidecar rules)."""

from __future__ import annotations

import pytest

from metrics_collector.early_stopping import RuleChecker, StopRule
from metrics_collector.wrapper import parse_args


def feed(checker: RuleChecker, *reports: tuple[str, str]) -> list[bool]:
    """observe() one report at a time; the answers in order."""
    return [checker.observe([r]) for r in reports]


def test_parse_katib_flag_shape() -> None:
    rule = StopRule.parse("Validation-accuracy;0.62;LESS;4")
    assert rule == StopRule("Validation-accuracy", 0.62, "less", 4)
    assert StopRule.parse(rule.format()) == rule
    assert StopRule.parse("a;b;1;greater;2").name == "a;b"  # only the last 3 fields split
    assert StopRule.parse("loss;1e-3;equal;").start_step == 1


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("acc;0.5;less", "is not name;value;comparison;start_step"),
        ("acc;high;less;2", "is not a number"),
        ("acc;nan;less;2", "must be finite"),
        ("acc;0.5;below;2", "comparison must be one of equal, less, greater"),
        ("acc;0.5;less;two", "is not an int"),
    ],
)
def test_parse_errors_say_why(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        StopRule.parse(text)


def test_objective_uses_best_so_far_and_waits_for_start_step() -> None:
    checker = RuleChecker([StopRule("acc", 0.5, "less", 3)], "acc", maximize=True)
    # 0.6 is the best so far; the later 0.1 and 0.2 do not make the best drop below 0.5.
    assert feed(checker, ("acc", "0.6"), ("acc", "0.1"), ("acc", "0.2")) == [False] * 3
    checker = RuleChecker([StopRule("acc", 0.5, "less", 3)], "acc", maximize=True)
    # Below from the first report, but only checked at the third.
    assert feed(checker, ("acc", "0.1"), ("acc", "0.2"), ("acc", "0.3")) == [False, False, True]
    assert "acc best so far 0.3 is less than 0.5 after 3 reports" in checker.reason
    assert not checker.active and checker.observe([("acc", "0.0")]) is False


def test_minimize_best_is_the_minimum() -> None:
    checker = RuleChecker([StopRule("loss", 1.0, "greater", 2)], "loss", maximize=False)
    assert feed(checker, ("loss", "0.9"), ("loss", "3.0")) == [False, False]  # best 0.9
    checker = RuleChecker([StopRule("loss", 1.0, "greater", 2)], "loss", maximize=False)
    assert feed(checker, ("loss", "1.5"), ("loss", "1.2")) == [False, True]


def test_other_metrics_are_compared_raw_and_every_rule_must_hold() -> None:
    rules = [StopRule("acc", 0.5, "less", 1), StopRule("loss", 2.0, "greater", 2)]
    checker = RuleChecker(rules, "acc", maximize=True)
    assert feed(
        checker,
        ("acc", "0.3"),  # acc rule holds (and stays satisfied)
        ("loss", "5.0"),  # first loss report: before its start_step
        ("acc", "0.9"),
        ("loss", "1.0"),  # raw value, not the best: does not hold
        ("loss", "2.5"),  # holds: now every rule has held
    ) == [False, False, False, False, True]


def test_non_numbers_are_not_counted_and_equal_compares_exactly() -> None:
    checker = RuleChecker([StopRule("acc", 0.5, "equal", 2)], "acc", maximize=True)
    assert feed(checker, ("acc", "nan"), ("acc", "x"), ("acc", "0.5"), ("acc", "0.5")) == [
        False,
        False,
        False,
        True,
    ]


def test_no_rules_never_stop() -> None:
    checker = RuleChecker([], "acc", maximize=True)
    assert not checker.active
    assert feed(checker, ("acc", "0"), ("acc", "0")) == [False, False]


def test_wrapper_command_line() -> None:
    cfg = parse_args(
        [
            "--trial-name=t",
            "--metric-names=loss,acc",
            "--trial-dir=/tmp/x",
            "--db-manager-address=127.0.0.1:1",
            "--stop-rule",
            "loss;0.7;greater;4",
            "--stop-rule=acc;0.2;less;1",
            "--objective-type=minimize",
            "--early-stopping-address=127.0.0.1:2",
            "--",
            "python",
            "train.py",
        ]
    )
    assert cfg.stop_rules == [
        StopRule("loss", 0.7, "greater", 4),
        StopRule("acc", 0.2, "less", 1),
    ]
    assert cfg.objective_type == "minimize"
    assert cfg.early_stopping_address == "127.0.0.1:2"
    assert cfg.command == ["python", "train.py"]


def test_wrapper_rejects_a_bad_rule(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(
            [
                "--trial-name=t",
                "--metric-names=acc",
                "--trial-dir=/tmp/x",
                "--db-manager-address=127.0.0.1:1",
                "--stop-rule=acc;0.5;below;2",
                "--",
                "true",
            ]
        )
    assert info.value.code == 2
    assert "comparison must be one of equal, less, greater" in capsys.readouterr().err
