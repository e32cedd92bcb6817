"""One sensor tick from the command line, without a running daemon: ``medqa tick``.

Evaluates ``raw_logs_sensor`` through the Dagster instance (``DAGSTER_HOME``), adds the versions
it claims as partitions, and runs ``retraining_etl`` in this process for each version the sensor
requests (one per open claim, so an unfinished version is finished). Runs are recorded in the
instance as with the daemon.
"""

from __future__ import annotations

import dagster as dg


def evaluate_sensor(instance: dg.DagsterInstance) -> dg.SensorResult:
    """One tick of ``raw_logs_sensor`` through ``instance``, with its new versions added as partitions."""
    from medqa_assets.resources import ObjectStoreResource
    from medqa_assets.retraining.assets import raw_logs_sensor

    with dg.build_sensor_context(instance=instance, resources={"store": ObjectStoreResource()}) as context:
        result = raw_logs_sensor(context)
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def tick_and_run(instance: dg.DagsterInstance) -> list[tuple[str, bool]]:
    """Returns (version, succeeded) for every run launched."""
    from medqa_assets.definitions import defs

    result = evaluate_sensor(instance)
    job = defs.resolve_job_def("retraining_etl")
    outcomes = []
    for request in result.run_requests:  # one per open claim, i.e. per unfinished version
        run = job.execute_in_process(instance=instance, partition_key=request.partition_key, raise_on_error=False)
        outcomes.append((request.partition_key, run.success))
    return outcomes


def main() -> int:
    with dg.DagsterInstance.get() as instance:
        outcomes = tick_and_run(instance)
    if not outcomes:
        print("no settled new files under retraining_data_raw/ and no unfinished version")
        return 0
    for version, success in outcomes:
        print(f"{version}: {'complete' if success else 'FAILED (see the run in the Dagster UI or logs)'}")
    return 0 if all(success for _, success in outcomes) else 1
