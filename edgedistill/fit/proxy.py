"""Accuracy, cheaply: an Optuna study whose trials are short quantization-aware distillations.

Each feasible shape is enqueued once as a trial. A trial distills its shape rung by rung
(`ProxyConfig.rungs`: min_steps x reduction_factor^k optimiser steps, cumulative), each rung
continuing from the previous rung's student, with the recipe's losses and fake quantization, and
reports its validation figure after each rung; Optuna's `SuccessiveHalvingPruner` stops the
ones that rank in the lower part of a rung, so training time goes to the promising shapes. The
validation split is carved from the training data (`edgedistill.fit.data`), never the eval split
that reports quote.

Storage is Optuna's: an SQLite file under ``OUT/fit/`` by default (``kill -9`` loses at most the
running trial; heartbeats let the next worker fail it and `RetryFailedTrialCallback` enqueue it
again, its finished rungs kept on disk), or any RDB URL (``postgresql://...``) so several
machines work one study. A shape is trained by at most one trial: a trial that finds an earlier
live or finished trial of its shape (two workers enqueueing at once) stands down.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgedistill.fit.config import FitConfig
from edgedistill.fit.space import Shape
from edgedistill.io import process_alive

log = logging.getLogger(__name__)

METRIC = {
    "sequence-classification": "accuracy",
    "feature-extraction": "cosine_to_teacher",
    "causal-lm": "top1_agreement_with_teacher",
}
HEARTBEAT_S = 10
GRACE_S = 30


def storage_url(cfg: FitConfig, fit_dir: Path, override: str | None = None) -> str:
    return override or cfg.storage or f"sqlite:///{(fit_dir / 'study.db').resolve()}"


def open_storage(url: str):
    """Optuna storage with heartbeats, so a killed worker's trial is failed and retried."""
    import optuna
    from optuna.storages import RetryFailedTrialCallback

    if url.startswith("journal:"):  # a file several local processes append to; no heartbeats
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    # SQLite serialises writers: wait for the other worker's write instead of failing after 5 s
    engine = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None
    with _quiet_optuna():
        retry = RetryFailedTrialCallback(max_retry=3, inherit_intermediate_values=False)
        return _retry_race(
            lambda: optuna.storages.RDBStorage(
                url, engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, failed_trial_callback=retry
            )
        )


def _retry_race(make, attempts: int = 5):
    """Two workers opening a new storage or study at once race to create it; the loser tries again."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return make()
        except (
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.IntegrityError,
            optuna.exceptions.DuplicatedStudyError,
        ):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def open_study(cfg: FitConfig, storage):
    import optuna

    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=cfg.proxy.rungs()[0], reduction_factor=cfg.proxy.reduction_factor
    )
    with _quiet_optuna():
        return _retry_race(
            lambda: optuna.create_study(
                study_name=cfg.study_name,
                storage=storage,
                direction="maximize",
                pruner=pruner,
                sampler=optuna.samplers.RandomSampler(seed=cfg.seed),  # only enqueued shapes are trained
                load_if_exists=True,
            )
        )


def promising_first(rows: list[dict[str, Any]]) -> list[Shape]:
    """The feasible screening rows' shapes, the likeliest to be the most accurate first.

    Successive halving here is asynchronous (Optuna's `SuccessiveHalvingPruner`): a trial goes on
    to the next rung when it ranks in the top 1/reduction_factor of the trials that reached this
    rung before it, and the first trials have nothing to rank against. Enqueued smallest first,
    each shape beats the ones before it and runs every rung: the SST-2 search's 9 shapes cost 9
    full trials instead of about 2. Bigger students are usually the more accurate, so the largest
    measured artifact goes first and sets the bar, and the rest stop at the first rung unless
    they beat it. The order is a prior on cost only: a shape that outranks the trials before it
    is promoted whatever its place.
    """

    def size(row: dict[str, Any]) -> float:
        sizes = [(e.get("figures") or {}).get("size_mb") for e in row.get("exports", []) if e.get("feasible")]
        return max((x for x in sizes if x is not None), default=0.0)

    ordered = sorted(rows, key=lambda r: (-size(r), Shape.from_dict(r["shape"]).key))
    return [Shape.from_dict(r["shape"]) for r in ordered]


def enqueue(study, shapes: list[Shape]) -> None:
    """Every shape once: a shape with a trial waiting, running or finished is not enqueued again.

    A shape whose trials all failed is: a worker stopped by SIGTERM or Ctrl-C (or an error) leaves its
    running trial FAIL, which neither the heartbeat nor `fail_dead_local_trials` retries, so without
    this a polite stop would drop that shape from the search for good. Its finished rungs stay on
    disk, so the retry resumes them."""
    import optuna

    S = optuna.trial.TrialState
    live, failed = set(), set()
    for t in study.get_trials(deepcopy=False):
        key = t.params.get("shape") or t.system_attrs.get("fixed_params", {}).get("shape")
        (failed if t.state == S.FAIL else live).add(key)
    for shape in shapes:
        if shape.key in live:
            continue
        attrs = {"shape": shape.to_dict(), **({"retry_of_failed": True} if shape.key in failed else {})}
        _retry_race(
            lambda shape=shape, attrs=attrs: study.enqueue_trial({"shape": shape.key}, user_attrs=attrs)
        )


def waiting(study) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)))


def _earlier_trial_of(study, trial, key: str):
    import optuna

    S = optuna.trial.TrialState
    live = (S.WAITING, S.RUNNING, S.COMPLETE, S.PRUNED)
    for other in study.get_trials(deepcopy=False, states=live):
        if other.number < trial.number and other.params.get("shape") == key:
            return other
    return None


def run_study(
    study,
    shapes: dict[str, Shape],
    train_rung: Callable[[Shape, int, int], float],
    cfg: FitConfig,
    on_trial: Callable[[Any], None] | None = None,
) -> None:
    """Work the study until no enqueued shape is left (other workers may share it)."""
    import optuna

    rungs = cfg.proxy.rungs()
    keys = sorted(shapes)

    def objective(trial) -> float:
        # first of all: a worker killed from here on is recognised as dead by the next one on this host
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if "shape" not in trial.user_attrs:  # enqueued trials carry their shape; this one was sampled
            trial.set_user_attr("spare", "no enqueued shape was left for this trial; nothing trained")
            trial.study.stop()
            raise optuna.TrialPruned()
        key = trial.suggest_categorical("shape", keys)
        earlier = _earlier_trial_of(trial.study, trial, key)
        if earlier is not None:
            trial.set_user_attr("duplicate_of", earlier.number)
            raise optuna.TrialPruned()
        trial.set_user_attr("shape", shapes[key].to_dict())
        value = float("nan")
        for index, steps in enumerate(rungs):
            value = train_rung(shapes[key], index, steps)
            trial.report(value, steps)
            trial.set_user_attr("rungs_done", index + 1)
            if index + 1 < len(rungs) and trial.should_prune():
                trial.set_user_attr("pruned_at", f"rung {index} ({steps} steps): {value:.4f}")
                raise optuna.TrialPruned()
        return value

    def stop_when_empty(study, trial) -> None:
        if on_trial is not None:
            on_trial(trial)
        if waiting(study) == 0:
            study.stop()

    with _quiet_optuna():
        optuna.storages.fail_stale_trials(study)  # a worker killed mid-trial: failed, and enqueued again
        fail_dead_local_trials(study)
        if waiting(study) == 0:
            return
        study.optimize(objective, callbacks=[stop_when_empty], catch=())


def fail_dead_local_trials(study) -> list[int]:
    """Trials left running by a worker of this host that no longer exists (``kill -9``): failed and
    enqueued again at once, instead of after the heartbeat's grace period. Their shapes' finished
    rungs stay on disk, so the retry resumes them."""
    import optuna

    host, dead = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if worker_host != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        if study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
            study.enqueue_trial(
                dict(t.params), user_attrs={"shape": t.user_attrs.get("shape"), "retry_of": t.number}
            )
            dead.append(t.number)
            log.warning(
                "trial %d of a dead worker (%s) failed and enqueued again", t.number, t.user_attrs["worker"]
            )
    return dead


class _quiet_optuna:
    """Optuna logs every trial at INFO on its own handler: keep that in the log, not the console."""

    def __enter__(self):
        import optuna

        self.level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        optuna.logging.disable_default_handler()
        optuna.logging.enable_propagation()
        # heartbeats and fail_stale_trials are marked experimental; RetryFailedTrialCallback deprecated
        # in 4.9 for a callback that is itself experimental: both work, neither needs the user's attention
        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"optuna.*|edgedistill\.fit.*")
        return self

    def __exit__(self, *exc) -> None:
        import optuna

        self.warnings.__exit__(*exc)
        optuna.logging.set_verbosity(self.level)


def finalist_order(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials in the order they become finalists: the furthest rung first, then the best figure there.

    Trials that ran every rung come first, best first. When fewer of them than ``finalists`` exist
    (the largest shape, trained first, often outranks the rest at the first rung and is the only one
    to finish), the places left go to the pruned trials that got furthest, best first: a finalist
    that then fails a budget at its full measurement still has a runner-up behind it.
    """
    trained = [t for t in trials if t["state"] in ("complete", "pruned") and t["proxy_value"] is not None]
    return sorted(trained, key=lambda t: (t["state"] != "complete", -t["proxy_steps"], -t["proxy_value"]))


def trial_rows(study) -> list[dict[str, Any]]:
    """One row per shape trial (spares and stood-down duplicates left out), for reports and ranking."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        attrs = t.user_attrs
        if "shape" not in attrs or "spare" in attrs or "duplicate_of" in attrs:
            continue
        steps = sorted(t.intermediate_values)
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name.lower(),
                "shape": attrs["shape"],
                "proxy_value": t.value
                if t.value is not None
                else (t.intermediate_values[steps[-1]] if steps else None),
                "proxy_steps": steps[-1] if steps else 0,
                "rung_values": {int(s): t.intermediate_values[s] for s in steps},
                "pruned_at": attrs.get("pruned_at"),
                "worker": attrs.get("worker"),
            }
        )
    return rows
