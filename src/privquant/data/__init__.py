"""Datasets: built-in benchmarks and users' own data, as in-memory arrays."""

from privquant.data.dataset import Dataset, seeded_subset
from privquant.data.registry import dataset_names, fetch_dataset, load_dataset

__all__ = ["Dataset", "dataset_names", "fetch_dataset", "load_dataset", "seeded_subset"]
