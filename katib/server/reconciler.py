"""The server's controller loop: every unfinished experiment in storage, several servers at once.

Ownership. Each experiment row carries an owner and a heartbeat (a lease). A server
reconciles only the experiments it owns, and owns one only after a conditional
UPDATE in storage said so (`acquire_experiment`): of several servers trying at
once, exactly one wins. It takes an experiment that is free, one whose owner is
provably dead (same host, pid gone or reused: `owner_is_dead`), or one whose lease
is stale: heartbeat older than `lease_seconds` by the database's clock, so hosts
whose clocks disagree still agree on staleness.

Leases. A dedicated thread renews every lease this server holds in one statement
(`renew_leases`) every lease_seconds/3, independently of how long passes take, so
a slow pass (a model-based suggestion taking seconds) never lets a lease lapse.
An experiment missing from the renewal's answer was taken over or deleted: it is
dropped (and if deleted, its still-running trials are killed). When renewals have
failed for longer than a lease (database unreachable), passes pause until one
succeeds again, since another server may by then have adopted the experiments.

Fencing. A lease can still lapse under a pass in flight (process paused, database
partition). The controller writes trials and the experiment's status fenced by
owner (Controller.owner): storage checks ownership, and re-counts the trials the
new batch was planned on, in the same transaction as the write, with the
experiment row locked. A stale pass gets ConflictError and writes nothing, so no
trial is duplicated and no more than maxTrialCount are ever created.

Scheduling. One thread discovers experiments (every poll_interval, jittered; at
most half of the takeable ones per round, so servers share new work) and hands
passes to a pool of workers; an experiment has at most one pass in flight, so a
slow experiment holds one worker and the others keep going. A pass is followed at
once by another when it created or finished trials, else after `poll_interval`. Retryable errors
(database or suggestion service unreachable) back off per experiment; a
suggestion error no retry fixes fails the experiment (Runtime.reconcile_pass).

Stopping (`stop`) is graceful: no new passes, in-flight ones finish (up to the
timeout), running trials are left running, and every lease is released so another
server, or the next start of this one, adopts the experiments at once.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from katib import errors
from katib.api.models import Trial
from katib.controller.runtime import Runtime, owner_is_dead
from katib.storage.base import ExperimentLease

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, name)
#: on_event(event, namespace, name, detail): acquired, lost, deleted, completed, released.
EventHook = Callable[[str, str, str, str], None]

MAX_BACKOFF_SECONDS = 5.0


@dataclass
class _Owned:
    """What the server knows of one experiment it owns."""

    namespace: str
    name: str
    due: float = 0.0  # monotonic time of the next pass
    in_flight: bool = False
    failures: int = 0
    acquired_at: float = field(default_factory=time.monotonic)
    lost: bool = False  # missing from a later renewal: taken over or deleted
    trials: list[Trial] = field(default_factory=list)  # as of the last pass


class ExperimentReconciler:
    """Owns and reconciles the unfinished experiments of one storage (see the module doc)."""

    def __init__(
        self,
        runtime: Runtime,
        *,
        lease_seconds: float = 15.0,
        poll_interval: float = 0.2,
        max_workers: int = 8,
        on_event: EventHook | None = None,
    ) -> None:
        if lease_seconds <= 0 or poll_interval <= 0 or max_workers < 1:
            raise errors.InvalidArgumentError(
                "lease_seconds and poll_interval must be positive, max_workers at least 1"
            )
        self.runtime = runtime
        self.storage = runtime.storage
        self.owner = runtime.owner
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.max_workers = max_workers
        self._on_event = on_event
        self._owned: dict[Key, _Owned] = {}
        self._lock = threading.RLock()  # RLock: a done-callback may run inside _submit
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPoolExecutor | None = None
        self._futures: set[Future[None]] = set()
        self._renewed_at = time.monotonic()
        self._warned: dict[str, float] = {}

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        """Start the discovery and lease threads (idempotent while running)."""
        if self._threads:
            return
        self._stop.clear()
        self.runtime.controller.owner = self.owner
        self._renewed_at = time.monotonic()
        self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="katib-reconcile")
        self._threads = [
            threading.Thread(target=self._schedule_loop, name="katib-reconciler", daemon=True),
            threading.Thread(target=self._lease_loop, name="katib-leases", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop reconciling; leave trials running; release every lease held."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []
        with self._lock:
            pending = list(self._futures)
        for future in pending:  # a pass logs its own errors
            with contextlib.suppress(Exception):
                future.result(timeout=max(0.0, deadline - time.monotonic()))
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        with self._lock:
            owned = list(self._owned.values())
            self._owned.clear()
        # Released even if a pass is still in flight: fencing keeps its writes out.
        for state in owned:
            try:
                self.storage.release_experiment(state.name, state.namespace, self.owner)
                self._event("released", state, "server stopping")
            except errors.KatibError as exc:
                log.warning("%s/%s: lease not released: %s", state.namespace, state.name, exc)

    def owned(self) -> list[Key]:
        """(namespace, name) of the experiments this server currently owns."""
        with self._lock:
            return sorted(k for k, s in self._owned.items() if not s.lost)

    # --- discovery and dispatch -------------------------------------------------------
    def _schedule_loop(self) -> None:
        next_discovery = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_discovery:
                self._discover()
                # Jittered, so servers polling one database do not fall into lockstep.
                next_discovery = time.monotonic() + self.poll_interval * random.uniform(0.5, 1.5)
            self._dispatch()
            self._wake.wait(self.poll_interval / 4)
            self._wake.clear()

    def _discover(self) -> None:
        try:
            leases = self.storage.list_unfinished_experiments()
        except errors.KatibError as exc:
            self._warn("discover", f"listing experiments failed (retrying): {exc}")
            return
        with self._lock:
            known = set(self._owned)
        candidates: list[tuple[ExperimentLease, list[str]]] = []
        for lease in leases:
            if (lease.namespace, lease.name) in known:
                continue
            previous = lease.owner
            if previous is None or previous == self.owner:
                candidates.append((lease, []))
            elif owner_is_dead(previous):
                candidates.append((lease, [previous]))
            elif lease.age_seconds is None or lease.age_seconds > self.lease_seconds:
                candidates.append((lease, []))
            # else: a live lease, not ours to take
        # Take at most half (rounded up) of what is free per round, in random order:
        # servers polling one database then share new work instead of the quickest
        # taking it all, and a lone server still takes N experiments in log2(N) rounds.
        random.shuffle(candidates)
        taken = 0
        for lease, steal in candidates:
            if self._stop.is_set() or taken >= (len(candidates) + 1) // 2:
                return
            if self._try_acquire(lease, steal):
                taken += 1

    def _try_acquire(self, lease: ExperimentLease, steal: list[str]) -> bool:
        previous = lease.owner
        try:
            got = self.storage.acquire_experiment(
                lease.name,
                lease.namespace,
                self.owner,
                steal_from=steal,
                stale_after_seconds=self.lease_seconds,
            )
        except errors.NotFoundError:
            return False  # deleted since the listing
        except errors.KatibError as exc:
            self._warn("acquire", f"acquiring {lease.namespace}/{lease.name} failed: {exc}")
            return False
        if not got:
            return False
        self.runtime.controller.forget_experiment(lease.name, lease.namespace)
        state = _Owned(namespace=lease.namespace, name=lease.name)
        with self._lock:
            self._owned[(lease.namespace, lease.name)] = state
        if previous is not None and previous != self.owner:
            # Collectors of the previous owner's trials report to whoever the address
            # file names; point them here (a no-op for trials on other hosts).
            try:
                self.runtime.publish_address()
            except OSError as exc:
                log.warning("cannot rewrite the DBManager address file: %s", exc)
        self._event("acquired", state, f"from {previous}" if previous else "free")
        return True

    def _dispatch(self) -> None:
        if self._pool is None:
            return
        lease_valid = time.monotonic() - self._renewed_at < self.lease_seconds
        now = time.monotonic()
        with self._lock:
            for state in list(self._owned.values()):
                if state.in_flight:
                    continue
                if state.lost:
                    state.in_flight = True
                    self._submit(self._drop_lost, state)
                elif lease_valid and state.due <= now:
                    state.in_flight = True
                    self._submit(self._pass, state)

    def _submit(self, fn: Callable[[_Owned], None], state: _Owned) -> None:
        """Run fn(state) on the pool (caller holds the lock)."""
        assert self._pool is not None
        try:
            future = self._pool.submit(fn, state)
        except RuntimeError:  # pool shut down by stop()
            state.in_flight = False
            return
        self._futures.add(future)
        future.add_done_callback(self._done)

    def _done(self, future: Future[None]) -> None:
        with self._lock:
            self._futures.discard(future)
        self._wake.set()

    # --- one pass ----------------------------------------------------------------------
    def _pass(self, state: _Owned) -> None:
        key = (state.namespace, state.name)
        try:
            if self._stop.is_set():
                return
            try:
                result = self.runtime.reconcile_pass(state.name, state.namespace)
            except errors.NotFoundError as exc:
                if self._exists(state) is False:
                    self._deleted(state)
                    return
                self._failed(state, exc)
                return
            except errors.ConflictError as exc:
                log.warning("%s/%s: %s", *key, exc)
                with self._lock:
                    self._owned.pop(key, None)
                self._event("lost", state, str(exc))
                return
            except Exception as exc:  # one experiment never stops the loop
                self._failed(state, exc)
                return
            state.failures = 0
            state.trials = result.trials
            if result.completed:
                with self._lock:
                    self._owned.pop(key, None)
                try:
                    self.storage.release_experiment(state.name, state.namespace, self.owner)
                except errors.KatibError as exc:  # the lease then expires by itself
                    log.warning("%s/%s: lease not released: %s", *key, exc)
                self._event("completed", state, "")
                return
            busy = bool(result.created or result.finished)
            state.due = time.monotonic() + (0.0 if busy else self.poll_interval)
        finally:
            state.in_flight = False

    def _failed(self, state: _Owned, exc: BaseException) -> None:
        """Back off and retry; retryable errors are expected (outages), others are logged."""
        state.failures += 1
        delay = min(MAX_BACKOFF_SECONDS, self.poll_interval * 2 ** min(state.failures, 8))
        state.due = time.monotonic() + delay
        if isinstance(exc, errors.KatibError) and exc.retryable:
            self._warn(
                f"pass:{state.namespace}/{state.name}",
                f"{state.namespace}/{state.name}: retrying in {delay:.1f}s after: {exc}",
            )
        elif state.failures == 1 or state.failures % 20 == 0:  # a traceback, not a flood
            log.error(
                "%s/%s: reconcile pass failed %d time(s) (retrying in %.1fs)",
                state.namespace,
                state.name,
                state.failures,
                delay,
                exc_info=exc,
            )

    def _exists(self, state: _Owned) -> bool | None:
        """Whether the experiment is still stored (None: storage could not say)."""
        try:
            self.storage.get_experiment(state.name, state.namespace)
        except errors.NotFoundError:
            return False
        except errors.KatibError:
            return None
        return True

    def _deleted(self, state: _Owned) -> None:
        """The experiment was deleted under us: kill its unfinished trials (logs stay on disk)."""
        with self._lock:
            self._owned.pop((state.namespace, state.name), None)
        for trial in state.trials:
            if trial.is_completed:
                continue
            try:
                self.runtime.executor.kill(trial)
            except Exception as exc:  # best effort, per trial
                log.warning("%s: cleanup after deletion failed: %s", trial.name, exc)
        self._event("deleted", state, "unfinished trials killed")

    def _drop_lost(self, state: _Owned) -> None:
        """Missing from a renewal: deleted (clean up) or taken over (leave it to its owner)."""
        try:
            exists = self._exists(state)
            if exists is None:
                return  # ask again on the next dispatch
            if exists:
                with self._lock:
                    self._owned.pop((state.namespace, state.name), None)
                self._event("lost", state, "lease taken over")
            else:
                self._deleted(state)
        finally:
            state.in_flight = False

    # --- leases --------------------------------------------------------------------------
    def _lease_loop(self) -> None:
        interval = self.lease_seconds / 3
        while not self._stop.wait(interval):
            self._renew()

    def _renew(self) -> None:
        started = time.monotonic()
        try:
            held = set(self.storage.renew_leases(self.owner))
        except errors.KatibError as exc:
            self._warn("renew", f"renewing leases failed (retrying): {exc}")
            return
        self._renewed_at = time.monotonic()
        with self._lock:
            for key, state in self._owned.items():
                # One acquired while the renewal ran is missing from it by timing alone.
                if key not in held and state.acquired_at < started:
                    state.lost = True
        self._wake.set()

    # --- reporting -----------------------------------------------------------------------
    def _event(self, event: str, state: _Owned, detail: str) -> None:
        log.info("%s/%s: %s %s", state.namespace, state.name, event, detail)
        if self._on_event is not None:
            try:
                self._on_event(event, state.namespace, state.name, detail)
            except Exception:  # a hook never breaks the loop
                log.exception("reconciler event hook failed")

    def _warn(self, topic: str, message: str) -> None:
        """Log a warning at most every 10 s per topic (an outage would flood the log)."""
        now = time.monotonic()
        if now - self._warned.get(topic, -1e9) >= 10.0:
            self._warned[topic] = now
            log.warning("%s", message)
