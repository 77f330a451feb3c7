"""The errors a user can fix, under one base class.

Each carries a message that names the file (or setting) at fault, says what is wrong with it and
how to fix it, so the CLI prints it as is instead of a traceback. The CLI catches `UserError`
only: anything else is a bug, and shows as one.
"""


class UserError(Exception):
    """A problem in what the user gave us (a file, a study, an option, an image), not in the code."""


class DataError(UserError):
    """A data file or data directory is missing, damaged, or not the dataset it should be."""


class StudyError(UserError):
    """A study file (or built-in study name) is invalid: the message names the file, the key and why."""


class RunError(UserError):
    """A run directory is missing, incomplete, or does not match what was asked of it."""


class OptionError(UserError, ValueError):
    """A command-line option or API argument has a value that cannot be used."""


class WriteError(UserError):
    """A file could not be written: the disk is full, the file system is read-only, or it is not
    ours to write. The message names the file and what to free or change."""


class RunInUseError(RunError):
    """Another living process holds the run directory's lock (it is running or reporting on it)."""
