"""``/api/v1/datasets``, ``/versions``, ``/runs``, ``/checkpoints``: what the project holds,
as the server indexed it from the blobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from benchkit.server.api.deps import API, Reader, ServicesDep

router = APIRouter(prefix=API, tags=["catalog"])

Name = Annotated[str, Path(max_length=255)]


class DatasetOut(BaseModel):
    name: str
    complete: bool
    samples: int | None
    chunks: int | None
    bytes: int | None
    created: str | None


class Datasets(BaseModel):
    datasets: list[DatasetOut]


class Versions(BaseModel):
    #: each version's stored manifest.json
    versions: list[dict[str, Any]]


class Runs(BaseModel):
    #: each run's run.json
    runs: list[dict[str, Any]]


class CheckpointOut(BaseModel):
    run_id: str
    name: str
    size: int
    epoch: int | None
    step: int | None
    time: str | None


class Checkpoints(BaseModel):
    checkpoints: list[CheckpointOut]


@router.get("/datasets", response_model=Datasets)
def list_datasets(principal: Reader, services: ServicesDep) -> Datasets:
    """Every dataset, by name (incomplete ones have no readable index.json yet)."""
    return Datasets(datasets=services.catalog.datasets(principal.project_id))


@router.get("/datasets/{name}", response_model=DatasetOut)
def get_dataset(name: Name, principal: Reader, services: ServicesDep) -> DatasetOut:
    return DatasetOut(**services.catalog.dataset(principal.project_id, name))


@router.get("/versions", response_model=Versions)
def list_versions(principal: Reader, services: ServicesDep) -> Versions:
    """The manifest of every whole code version, oldest number first."""
    return Versions(versions=services.catalog.versions(principal.project_id))


@router.get("/versions/{version}", response_model=dict[str, Any])
def get_version(
    version: Annotated[int, Path(ge=1, le=2**31 - 1)], principal: Reader, services: ServicesDep
) -> dict[str, Any]:
    return services.catalog.version(principal.project_id, version)


@router.get("/runs", response_model=Runs)
def list_runs(principal: Reader, services: ServicesDep) -> Runs:
    """Every run's record, oldest first."""
    return Runs(runs=services.catalog.runs(principal.project_id))


@router.get("/runs/{run_id}", response_model=dict[str, Any])
def get_run(run_id: Name, principal: Reader, services: ServicesDep) -> dict[str, Any]:
    return services.catalog.run(principal.project_id, run_id)


@router.get("/checkpoints", response_model=Checkpoints)
def list_checkpoints(
    principal: Reader,
    services: ServicesDep,
    run: Annotated[str | None, Query(max_length=255)] = None,
) -> Checkpoints:
    """Checkpoints by run, in the order each run saved them."""
    return Checkpoints(checkpoints=services.catalog.checkpoints(principal.project_id, run))
