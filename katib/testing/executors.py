"""Contract tests every executor passes (see katib.executors.base for the contract).

Use: subclass `ExecutorContract` in a test module and provide two fixtures,
`executor` (a fresh executor) and `context` (a LaunchContext whose experiment
runs `python3 -c PROGRAM --value=${trialParameters.value}`), plus `make_trial`,
a callable (name, value) -> Trial rendered from that experiment. A trial whose
value is "fail" exits 1; "sleep" runs until stopped; anything else prints
`accuracy=<value>` and exits 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from katib.api.models import Trial
from katib.executors.base import BaseExecutor, LaunchContext, TrialOutcome, TrialPhase

PROGRAM = (
    "import sys, time\n"
    "value = sys.argv[1].split('=', 1)[1]\n"
    "if value == 'fail': sys.exit(1)\n"
    "if value == 'sleep': time.sleep(60)\n"
    "print('accuracy=' + value, flush=True)\n"
)


def wait_for(
    executor: BaseExecutor, trial: Trial, phases: set[TrialPhase], timeout: float = 30.0
) -> TrialOutcome:
    deadline = time.monotonic() + timeout
    while True:
        outcome = executor.poll(trial)
        if outcome.phase in phases or time.monotonic() > deadline:
            return outcome
        time.sleep(0.05)


class ExecutorContract:
    def test_unknown_trial_is_not_started(
        self, executor: BaseExecutor, make_trial: Callable[[str, str], Trial]
    ) -> None:
        assert executor.poll(make_trial("never-launched", "0.5")).phase == TrialPhase.NOT_STARTED

    def test_success_and_idempotent_launch(
        self,
        executor: BaseExecutor,
        context: LaunchContext,
        make_trial: Callable[[str, str], Trial],
    ) -> None:
        trial = make_trial("ok-trial", "0.5")
        executor.launch(trial, context)
        executor.launch(trial, context)
        outcome = wait_for(executor, trial, {TrialPhase.FINISHED, TrialPhase.LOST})
        assert outcome.phase == TrialPhase.FINISHED and outcome.exit_code == 0
        executor.launch(trial, context)  # finished: nothing runs again
        assert executor.poll(trial).phase == TrialPhase.FINISHED

    def test_failure_is_reported(
        self,
        executor: BaseExecutor,
        context: LaunchContext,
        make_trial: Callable[[str, str], Trial],
    ) -> None:
        trial = make_trial("failing-trial", "fail")
        executor.launch(trial, context)
        outcome = wait_for(executor, trial, {TrialPhase.FINISHED, TrialPhase.LOST})
        assert outcome.phase == TrialPhase.FINISHED
        assert not outcome.succeeded

    def test_stop_is_idempotent(
        self,
        executor: BaseExecutor,
        context: LaunchContext,
        make_trial: Callable[[str, str], Trial],
    ) -> None:
        trial = make_trial("sleeping-trial", "sleep")
        executor.launch(trial, context)
        assert wait_for(executor, trial, {TrialPhase.RUNNING}).phase == TrialPhase.RUNNING
        executor.stop(trial)
        executor.stop(trial)
        outcome = wait_for(executor, trial, {TrialPhase.FINISHED, TrialPhase.LOST})
        assert outcome.phase in {TrialPhase.FINISHED, TrialPhase.LOST}
        assert not outcome.succeeded
