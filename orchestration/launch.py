"""`python -m orchestration.launch [JOB] [-c RUN_CONFIG.yaml]`: run a job of the code location
that pyproject.toml's [tool.dagster] names (the one `dagster dev` serves) in this process, and
exit 1 unless the run succeeded.

The run is recorded with the code location's origin, as a run launched from the UI, so the
Dagster UI lists it on the Overview timeline and on the job's page (`dagster job execute` records
a run without one, which only the Runs page shows)."""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections.abc import Mapping

import dagster as dg
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._utils.interrupts import capture_interrupts

from lite_rec.config import PROJECT_ROOT

REPOSITORY = "__repository__"  # the name Dagster gives the repository of a Definitions object


def code_location() -> tuple[str, str]:
    """The module and code location name of pyproject.toml's [tool.dagster]."""
    tool = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["dagster"]
    return tool["module_name"], tool["code_location_name"]


def launch(
    job_name: str,
    instance: dg.DagsterInstance,
    run_config: Mapping[str, object] | None = None,
) -> dg.DagsterRun:
    """Create a run of `job_name` with the code location's origin, execute it here, and return
    it as stored when it ended."""
    module, location = code_location()
    target = LoadableTargetOrigin(
        executable_path=sys.executable, module_name=module, working_directory=str(PROJECT_ROOT)
    )
    repository = RemoteRepositoryOrigin(
        ManagedGrpcPythonEnvCodeLocationOrigin(target, location), REPOSITORY
    )
    job = ReconstructableRepository.for_module(
        module, "defs", str(PROJECT_ROOT)
    ).get_reconstructable_job(job_name)
    definition = job.get_definition()
    run = instance.create_run_for_job(
        definition,
        run_config=run_config,
        tags=definition.run_tags,
        remote_job_origin=repository.get_job_origin(job_name),
        job_code_origin=job.get_python_origin(),
    )
    with capture_interrupts():  # SIGINT and SIGTERM end the run as failed, not the process
        execute_run(job, run, instance)
    return instance.get_run_by_id(run.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m orchestration.launch", description=__doc__)
    parser.add_argument("job", nargs="?", default="main_job")
    parser.add_argument("-c", "--config", help="a run config YAML file")
    args = parser.parse_args(argv)
    run_config = yaml.safe_load(open(args.config)) if args.config else {}
    with dg.DagsterInstance.get() as instance:
        run = launch(args.job, instance, run_config)
    print(f"{args.job} run {run.run_id}: {run.status.value}")
    return 0 if run.status == dg.DagsterRunStatus.SUCCESS else 1


if __name__ == "__main__":
    sys.exit(main())
