"""The data layer: IDX files, where a dataset is found or fetched, and the splits of an experiment."""

from mnist_study.data.sources import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
