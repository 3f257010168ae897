"""Errors that end a stage, and the exit codes the CLI maps them to.

Orchestrators retry only what may succeed on a second try: the exit code says which is which
(sysexits.h: 65 bad data, 75 temporary failure, 78 bad configuration).
"""

EXIT_DATA = 65       # EX_DATAERR: the input data is unusable (names the file and the reason)
EXIT_TRANSIENT = 75  # EX_TEMPFAIL: may succeed if retried (a worker lost, a lock held)
EXIT_CONFIG = 78     # EX_CONFIG: params.yaml or the command line is wrong


class PipelineError(Exception):
    """Base class: an error the CLI reports in one line, without a traceback."""

    exit_code = 1


class DataError(PipelineError):
    """Input data cannot be used. The message names the file (or class) and the reason."""

    exit_code = EXIT_DATA


class TransientError(PipelineError):
    """A failure that a retry may fix (e.g. a Horovod worker was killed)."""

    exit_code = EXIT_TRANSIENT


class TrainingError(PipelineError):
    """Training diverged or failed for a reason a retry will not fix (e.g. a NaN loss)."""

    exit_code = EXIT_DATA


class ConfigError(PipelineError):
    """Params, paths or the command line are wrong; a retry with the same ones fails again."""

    exit_code = EXIT_CONFIG


class OutputError(PipelineError):
    """An output path names something the pipeline must not overwrite (e.g. the user's images)."""

    exit_code = EXIT_CONFIG


class ModelError(PipelineError, ValueError):
    """A model file is refused: not a Keras zip archive, not the bytes model.json records, or one
    that would run code on load. A ValueError for callers; exit 78 from the CLI."""

    exit_code = EXIT_CONFIG
