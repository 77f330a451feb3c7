"""The data layer: IDX files, where a dataset is found or fetched, and the splits of an experiment."""

from mnist_study.data.datasets import DATASETS, class_names
from mnist_study.data.sources import Dataset, load_dataset, load_named_dataset

__all__ = ["DATASETS", "Dataset", "class_names", "load_dataset", "load_named_dataset"]
