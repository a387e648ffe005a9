"""Populations of models: one pure job per model (train, deploy), run by an executor, cached."""

from privquant.population.deploy import (
    DeployJob,
    bits_label,
    deploy_model,
    deploy_one,
    load_deployed,
)
from privquant.population.executor import Executor, ExecutorConfig, LocalExecutor
from privquant.population.jobs import (
    TrainJob,
    context_for,
    job_key,
    model_factory,
    train_job_model,
    train_one,
)
from privquant.population.query import QueryJob, query_one
from privquant.population.train import population_jobs, train_population

__all__ = [
    "DeployJob",
    "Executor",
    "ExecutorConfig",
    "QueryJob",
    "LocalExecutor",
    "TrainJob",
    "bits_label",
    "context_for",
    "deploy_model",
    "deploy_one",
    "job_key",
    "load_deployed",
    "model_factory",
    "population_jobs",
    "query_one",
    "train_job_model",
    "train_one",
    "train_population",
]
