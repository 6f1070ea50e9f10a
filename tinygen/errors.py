"""The exceptions tinygen raises.

Every error a user can cause derives from `TinygenError`, and also from the built-in class
a Python programmer would expect (`ValueError` for a bad value or shape, `TypeError` for a bad
type), so `except ValueError` keeps working. Messages name the argument, the value found and
the value expected.
"""


class TinygenError(Exception):
    """Base class of every error tinygen raises on purpose."""


class ShapeError(TinygenError, ValueError):
    """An array has the wrong number of dimensions or the wrong shape."""


class DTypeError(TinygenError, TypeError):
    """An array has a dtype the operation does not accept."""


class UnsupportedTypeError(TinygenError, TypeError):
    """A value of a type the operation cannot handle (saving a function in a checkpoint...)."""


class ArgumentError(TinygenError, ValueError):
    """An argument has a value outside its allowed range (stride, padding, probability...)."""


class CheckpointError(TinygenError, ValueError):
    """A checkpoint file is missing, truncated, corrupt, or not a tinygen checkpoint."""


class StateDictError(TinygenError, KeyError):
    """`load_state_dict` found missing, unexpected or wrong-shaped keys."""

    def __str__(self):
        # KeyError quotes its argument; the message reads better plain.
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(TinygenError, RuntimeError):
    """A backend (kernel set or device) was asked for but cannot be used here."""


class DeviceMismatchError(TinygenError, RuntimeError):
    """The inputs of one operation live on different devices (cpu and cuda, or two GPUs)."""


class DatasetFormatError(TinygenError, ValueError):
    """A data file does not have the format or content it claims (IDX header, SHA-256, PNG chunks)."""


class DownloadError(TinygenError, OSError):
    """A file could not be downloaded (no network, every mirror refused or timed out)."""
