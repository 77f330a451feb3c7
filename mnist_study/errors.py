"""Exceptions that mnist-study raises for problems a user can fix.

Each one carries a message that names the file (or setting) at fault, says what is wrong with it,
and says how to fix it, so the CLI can print it as is instead of a traceback.
"""


class DataError(Exception):
    """A data file or data directory is missing, damaged, or not the dataset it should be."""


class StudyError(Exception):
    """A study file (or built-in study name) is invalid: the message names the file, the key and why."""


class RunError(Exception):
    """A run directory is missing, incomplete, or does not match what was asked of it."""
