"""One sensor tick from the command line, without a running daemon: ``medqa tick``.

Evaluates ``raw_logs_sensor`` through the Dagster instance (``DAGSTER_HOME``) with the cursor
the previous ``medqa tick`` left, and runs ``retraining_etl`` in this process for each run the
sensor requests, skipping any run key that already ran, as the daemon would. Ticks on one
instance take turns (a lock file in ``DAGSTER_HOME``); a tick killed mid-run leaves a run that
the next tick marks failed, and its version is finished by the next request.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

import dagster as dg

from medqa_assets.retraining.assets import ORPHANED_TAG, consumed_logs_sensor

TICK_CURSOR_KEY = "medqa/raw_logs_sensor_tick_cursor"
LAUNCHED_BY_TAG = "medqa/launched_by"
RUN_KEY_TAG = "dagster/run_key"


def evaluate_sensor(
    instance: dg.DagsterInstance, cursor: str | None = None, sensor: dg.SensorDefinition | None = None
) -> dg.SensorResult:
    """One evaluation of ``raw_logs_sensor`` (or ``sensor``) through ``instance``, with its new versions
    added as partitions."""
    from medqa_assets.resources import ObjectStoreResource
    from medqa_assets.retraining.assets import raw_logs_sensor

    with dg.build_sensor_context(
        instance=instance, resources={"store": ObjectStoreResource()}, cursor=cursor
    ) as context:
        result = (sensor or raw_logs_sensor)(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


@contextlib.contextmanager
def tick_lock(home: str) -> Iterator[None]:
    """Ticks on one Dagster instance take turns, from before the instance is opened: two
    processes creating a new instance's storage at once would collide."""
    os.makedirs(home, exist_ok=True)
    with open(os.path.join(home, "medqa-tick.lock"), "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("another medqa tick is running on this Dagster instance; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _fail_orphaned_runs(instance: dg.DagsterInstance) -> None:
    """Runs a killed tick left 'started': with the lock held, no tick is running them."""
    orphaned = instance.get_runs(
        filters=dg.RunsFilter(
            tags={LAUNCHED_BY_TAG: "medqa tick"},
            statuses=[dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.NOT_STARTED],
        )
    )
    for run in orphaned:
        instance.add_run_tags(run.run_id, {ORPHANED_TAG: "killed"})
        instance.report_run_failed(run)


def tick_and_run(instance: dg.DagsterInstance) -> list[tuple[str, bool]]:
    """Returns (version, succeeded) for every run launched."""
    with tick_lock(instance.root_directory):
        return _tick_and_run_locked(instance)


def tick_from_environment() -> list[tuple[str, bool]]:
    """One tick on the instance in ``DAGSTER_HOME``, as `medqa tick` runs it."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    if not home:  # Dagster's own error message says what to set
        with dg.DagsterInstance.get() as instance:
            return tick_and_run(instance)
    with tick_lock(home), dg.DagsterInstance.get() as instance:
        return _tick_and_run_locked(instance)


def _tick_and_run_locked(instance: dg.DagsterInstance) -> list[tuple[str, bool]]:
    from medqa_assets.definitions import defs

    _fail_orphaned_runs(instance)
    cursor = instance.run_storage.get_cursor_values({TICK_CURSOR_KEY}).get(TICK_CURSOR_KEY) or None
    result = evaluate_sensor(instance, cursor)
    instance.run_storage.set_cursor_values({TICK_CURSOR_KEY: result.cursor or ""})
    requests = list(result.run_requests or [])
    if not requests:  # nothing to build: delete what is consumed and left alone long enough
        requests = list(evaluate_sensor(instance, sensor=consumed_logs_sensor).run_requests or [])
    outcomes = []
    for request in requests:
        if instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key}), limit=1):
            continue  # that request already ran, as the daemon's run keys would have it
        job = defs.resolve_job_def(request.job_name or "retraining_etl")
        run = job.execute_in_process(
            instance=instance,
            partition_key=request.partition_key,
            run_config=request.run_config,
            tags={**request.tags, RUN_KEY_TAG: request.run_key, LAUNCHED_BY_TAG: "medqa tick"},
            raise_on_error=False,
        )
        outcomes.append((request.partition_key or job.name, run.success))
    return outcomes


def main() -> int:
    outcomes = tick_from_environment()
    if not outcomes:
        print("nothing to do: no settled new files under retraining_data_raw/ and no unfinished version")
        return 0
    for version, success in outcomes:
        print(f"{version}: {'complete' if success else 'FAILED (see the run in the Dagster UI or logs)'}")
    return 0 if all(success for _, success in outcomes) else 1
