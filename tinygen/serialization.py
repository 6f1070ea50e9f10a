"""Checkpoints: `save(obj, path)` and `load(path)` for nested dicts, lists, tuples and arrays.

A checkpoint is an uncompressed NumPy ``.npz`` file (a zip of ``.npy`` files) that plain NumPy
can open and inspect:

- every array in `obj` (an ndarray, a CuPy array copied from the GPU, or a Tensor's data) is
  one entry, named by its place in
  the nesting joined with ``/``: ``model/conv1.weight``, ``optimizer/state/0/exp_avg``.
  List and tuple items are named by their index. A ``/`` or ``%`` inside a dict key is written
  ``%2F`` or ``%25`` in the entry name, so no two places share a name;
- the entry ``__tinygen__`` holds UTF-8 JSON, ``{"format_version": 1, "skeleton": ...}``. The
  skeleton is `obj` with each array replaced by ``{"array": name}`` or ``{"tensor": name}``.
  Strings, ints, finite floats, bools and None appear as themselves; everything else is a
  one-key object: ``{"dict": [[key, value], ...]}`` (so int keys stay ints),
  ``{"list": [...]}``, ``{"tuple": [...]}``, ``{"float": "nan" | "-nan" | "inf" | "-inf"}``.

`load` gives back the same structure: dicts, lists and tuples (subclasses come back as the plain
type), ndarrays as ndarrays, Tensors as Tensors with ``requires_grad=False``, NumPy scalars as
the Python numbers they equal. An array reached twice is stored, and loaded, twice.

Why no pickle: unpickling runs code that the file names, so loading someone else's pickled
checkpoint means running their program. Nothing here is pickled: `save` refuses what JSON and
``.npy`` cannot hold (object arrays, functions, arbitrary classes) with a `TypeError` naming
where it sits in `obj`, and `load` reads with ``allow_pickle=False``.

`save` writes a temporary file next to `path`, fsyncs it and renames it onto `path`, so a crash
leaves the old checkpoint or the new one, never a mix. `load` turns every problem with the file
into one `CheckpointError` that names the file and the problem.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "run1.ckpt")
>>> save({"step": 3, "state": {0: np.eye(2)}}, path)
>>> sorted(np.load(path).files)
['__tinygen__', 'state/0']
>>> load(path)["state"][0]
array([[1., 0.],
       [0., 1.]])
"""

import contextlib
import json
import math
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from tinygen.errors import CheckpointError, DTypeError, UnsupportedTypeError

FORMAT_VERSION = 1
METADATA_KEY = "__tinygen__"

_ARRAY_KINDS = "biufc"  # bool, signed, unsigned, float, complex: what .npy stores without pickle

# What NumPy and zipfile raise on a damaged archive, each reported as a CheckpointError. Flipping
# single bytes of a checkpoint gave BadZipFile, ValueError, EOFError, OSError, NotImplementedError
# (a "compression method") and RuntimeError (an "encrypted" flag); zlib.error comes from a damaged
# np.savez_compressed file, MemoryError from a header claiming a huge shape.
_CORRUPT_ERRORS = (
    zipfile.BadZipFile, zlib.error, struct.error, ValueError, EOFError, OSError,
    NotImplementedError, RuntimeError, OverflowError, MemoryError,
)


# --- save -----------------------------------------------------------------------------------

def save(obj, path):
    """Write `obj` (nested dicts/lists/tuples of arrays, Tensors and plain values) to `path`.

    `path` (str or os.PathLike) is written exactly as given: no ``.npz`` is appended and no
    directory is created. Unsupported values raise `UnsupportedTypeError` (a `TypeError`); a structure that contains
    itself, two arrays with one entry name (``0`` and ``"0"`` in one dict) and file-system
    problems raise `CheckpointError`. In every failure an existing file at `path` is left as it was.
    """
    path = os.fspath(path)
    entries = {}
    skeleton = _flatten(obj, (), entries, frozenset())
    metadata = json.dumps(
        {"format_version": FORMAT_VERSION, "skeleton": skeleton}, allow_nan=False, ensure_ascii=False
    )
    entries[METADATA_KEY] = np.frombuffer(metadata.encode("utf-8"), dtype=np.uint8)
    _check_destination(path)
    try:
        write_atomically(path, lambda file: _write_npz(file, entries))
    except OSError as err:
        raise CheckpointError(f"cannot save checkpoint {path!r}: {err}") from err


def _flatten(value, parts, entries, ancestors):
    """The JSON skeleton of `value`; its arrays go into `entries` under their names.

    `parts` are the entry-name components of the place `value` sits at; `ancestors` holds the
    ids of the containers above it, to refuse a structure that contains itself.
    """
    from tinygen.tensor import Tensor  # NOTE: imported here so tensor.py may import this module

    if isinstance(value, Tensor):
        return {"tensor": _add_entry(entries, parts, value.numpy())}
    if type(value).__module__.split(".")[0] == "cupy":
        value = value.get()  # a GPU array (optimizer and EMA state): saved as the NumPy array it holds
    if isinstance(value, np.ndarray):
        return {"array": _add_entry(entries, parts, value)}
    if isinstance(value, (np.bool_, np.integer, np.floating)):
        value = value.item()  # a NumPy scalar is stored as the Python number it equals
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value):
            return float(value)
        # repr gives "nan" for either sign of NaN: keep the sign bit, as the arrays keep theirs
        return {"float": "-nan" if math.isnan(value) and math.copysign(1.0, value) < 0 else repr(float(value))}
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (dict, list, tuple)):
        if id(value) in ancestors:
            raise CheckpointError(f"cannot save {_where(parts)}: it contains itself")
        ancestors = ancestors | {id(value)}
        if isinstance(value, dict):
            pairs = []
            for key, item in value.items():
                key, part = _dict_key(key, parts)
                pairs.append([key, _flatten(item, parts + (part,), entries, ancestors)])
            return {"dict": pairs}
        items = [_flatten(item, parts + (str(i),), entries, ancestors) for i, item in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    raise UnsupportedTypeError(
        f"cannot save {_where(parts)}: values of type {type(value).__qualname__} are not supported "
        "(a checkpoint holds dicts, lists, tuples, str, int, float, bool, None, "
        "numeric NumPy arrays and scalars, and Tensors)"
    )


def _dict_key(key, parts):
    """`key` as stored in the skeleton (str or int), and its entry-name component."""
    if isinstance(key, str):
        return str(key), key.replace("%", "%25").replace("/", "%2F")
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        return int(key), str(int(key))
    raise UnsupportedTypeError(
        f"cannot save {_where(parts)}: dict key {key!r} is a {type(key).__qualname__}, "
        "but checkpoint dict keys must be str or int"
    )


def _add_entry(entries, parts, array):
    """Put `array` into `entries` under the name made of `parts`, and return that name."""
    name = "/".join(parts)
    if isinstance(array, np.ma.MaskedArray) or array.dtype.kind not in _ARRAY_KINDS:
        what = "a masked array" if isinstance(array, np.ma.MaskedArray) else f"dtype {array.dtype}"
        raise DTypeError(
            f"cannot save {_where(parts)}: {what} cannot be stored without pickle "
            "(only bool and numeric arrays can)"
        )
    if name in entries or name == METADATA_KEY:
        raise CheckpointError(
            f"cannot save {_where(parts)}: its entry name {name!r} is already taken "
            "(an int key and an equal str key in one dict, or the reserved name)"
        )
    entries[name] = array
    return name


def _where(parts):
    return f"obj at {'/'.join(parts)!r}" if parts else "the top-level obj"


def _check_destination(path):
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CheckpointError(f"cannot save checkpoint {path!r}: directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"cannot save checkpoint {path!r}: it is a directory")


def write_atomically(path, write):
    """Call `write(file)` on a temporary file beside `path`, fsync it, then rename it onto `path`.

    A crash or an exception leaves the old `path` (or none), never a partial file; the
    temporary file is removed. Also used for the PNG files and the downloaded data files.
    """
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp_path = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(tmp_path, _new_file_mode())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise


def _write_npz(file, entries):
    """Write `entries` as an uncompressed .npz into the open binary `file`.

    The bytes `np.savez` writes, done by hand because `np.savez(file, **entries)` would take an
    entry named ``file`` or ``allow_pickle`` for its own argument, with one difference: every
    entry carries the same fixed date, so the same arrays always give the same bytes (and the
    same SHA-256, which the evaluation's feature net is pinned by).
    """
    with zipfile.ZipFile(file, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, array in entries.items():
            info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16  # what zipfile gives an entry opened by name
            with archive.open(info, mode="w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)


def _new_file_mode():
    """The permissions `open()` would give a new file (mkstemp's are 0o600, owner only)."""
    # NOTE: reading the umask means setting it; another thread creating a file in between gets
    # umask 0. Files are saved from the training loop's thread, so this is accepted.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


# --- load -----------------------------------------------------------------------------------

def load(path):
    """Read back the object that `save` wrote to `path` (str or os.PathLike).

    Arrays are read into memory before the file is closed. Any problem with the file (missing,
    a directory, truncated, not a tinygen checkpoint, needs pickle...) raises `CheckpointError`.
    """
    path = os.fspath(path)
    with _open_file(path) as file, _open_npz(file, path) as archive:
        skeleton = _read_metadata(archive, path)
        return _rebuild(skeleton, archive, path)


def _error(path, problem):
    return CheckpointError(f"cannot load checkpoint {path!r}: {problem}")


def _open_file(path):
    try:
        return open(path, "rb")
    except FileNotFoundError as err:
        raise _error(path, "no such file") from err
    except OSError as err:
        problem = "it is a directory" if os.path.isdir(path) else err.strerror or str(err)
        raise _error(path, problem) from err


def _open_npz(file, path):
    try:
        archive = np.load(file, allow_pickle=False)
    except EOFError as err:
        raise _error(path, "the file is empty") from err
    except zipfile.BadZipFile as err:
        raise _error(path, f"not a readable zip archive, the file is truncated or corrupt ({err})") from err
    except _CORRUPT_ERRORS as err:  # NumPy then guesses a pickle; say what the file starts with instead
        file.seek(0)
        head = file.read(8)
        raise _error(path, f"not an .npz archive (a zip of .npy arrays): it starts with {head!r}") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _error(path, "it holds a single .npy array, not a tinygen .npz checkpoint")
    return archive


def _read_metadata(archive, path):
    """The skeleton from the ``__tinygen__`` entry, after checking the format version."""
    if METADATA_KEY not in archive.files:
        raise _error(path, f"no {METADATA_KEY!r} entry, so this .npz was not written by tinygen.save")
    raw = _read_entry(archive, METADATA_KEY, path)
    try:
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise ValueError(f"expected 1-d uint8 bytes, got {raw.dtype} of shape {raw.shape}")
        metadata = json.loads(raw.tobytes().decode("utf-8"))
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError included
        raise _error(path, f"the {METADATA_KEY!r} metadata is not valid UTF-8 JSON ({err})") from err
    if not isinstance(metadata, dict) or "skeleton" not in metadata:
        raise _error(path, f"the {METADATA_KEY!r} metadata has no skeleton")
    version = metadata.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise _error(path, f"unknown format version {version!r} (this tinygen reads version {FORMAT_VERSION})")
    return metadata["skeleton"]


def _read_entry(archive, name, path):
    """The array stored under `name`, fully read into memory."""
    # NOTE: read the exact member name + ".npy"; archive[name] would also match a member named `name`,
    # so entry "w.npy" (member "w.npy.npy") would come back as entry "w" (member "w.npy").
    try:
        member = archive.zip.getinfo(name + ".npy")
    except KeyError:
        raise _error(path, f"the metadata refers to entry {name!r}, which is missing from the archive") from None
    try:
        with archive.zip.open(member) as entry:
            array = np.lib.format.read_array(entry, allow_pickle=False, max_header_size=archive.max_header_size)
    except _CORRUPT_ERRORS as err:  # an object array needing pickle lands here as a ValueError
        raise _error(path, f"entry {name!r} cannot be read ({err})") from err
    return array if array.flags.writeable else array.copy()


def _rebuild(node, archive, path):
    """The object described by the skeleton `node`, with its arrays read from `archive`."""
    from tinygen.tensor import Tensor  # NOTE: imported here so tensor.py may import this module

    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((tag, body),) = node.items()
        if tag == "array" and isinstance(body, str):
            return _read_entry(archive, body, path)
        if tag == "tensor" and isinstance(body, str):
            array = _read_entry(archive, body, path)
            try:
                return Tensor(array, requires_grad=False)
            except DTypeError as err:  # e.g. a complex array, which arrays may hold but tensors not
                raise _error(path, f"entry {body!r} cannot be a Tensor ({err})") from err
        if tag in ("list", "tuple") and isinstance(body, list):
            items = [_rebuild(item, archive, path) for item in body]
            return tuple(items) if tag == "tuple" else items
        if tag == "dict" and isinstance(body, list) and all(_is_pair(pair) for pair in body):
            return {key: _rebuild(item, archive, path) for key, item in body}
        if tag == "float" and body in ("nan", "-nan", "inf", "-inf"):
            return float(body)
    raise _error(path, f"the {METADATA_KEY!r} metadata is malformed near {json.dumps(node)[:80]}")


def _is_pair(pair):
    """Whether a skeleton dict item is ``[key, value]`` with a str or int key."""
    return (
        isinstance(pair, list) and len(pair) == 2
        and isinstance(pair[0], (str, int)) and not isinstance(pair[0], bool)
    )
