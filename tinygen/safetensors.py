"""safetensors files with NumPy only: `save_file(tensors, filename, metadata=None)`, `load_file(filename)`.

The format of huggingface/safetensors, which PyTorch, JAX and the model hubs read:

    8 bytes     N: the header's length, an unsigned 64-bit little-endian integer
    N bytes     the header, UTF-8 JSON: {"NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [BEGIN, END]},
                ..., "__metadata__": {"key": "value", ...}}, padded with spaces
    the rest    the byte buffer: each tensor's elements little-endian and row-major at [BEGIN, END)

The offsets count from the start of the buffer, and the tensors tile it exactly: no gap, no
overlap, nothing after the last one, so that no other format can hide inside a file. The names
and signatures are those of ``safetensors.numpy`` (`load_metadata` stands in for its
``safe_open(...).metadata()``).

`save_file` lays a file out as the reference implementation does, so that both write the same
bytes: the tensors ordered by decreasing alignment (8-byte dtypes first), then by name, the header
padded to a multiple of 8 bytes, so that each tensor starts at a multiple of its element size.
It writes a temporary file and renames it onto `filename`, as checkpoints are written.

`load_file` checks the whole header before it reads a tensor: the header length within the file
and the format's 100 MB limit, UTF-8 JSON without duplicate keys, a known dtype and a shape of
non-negative integers for each tensor, offsets that tile the buffer, a size that agrees with
dtype and shape, BOOL bytes that are 0 or 1. Every problem raises a `CheckpointError` naming
the file and the problem.

`model_tensors(model)` and `export_model(model, filename)` write a tinygen model's weights under
the names its PyTorch twin (``benchmarks/torch_twins.py``) gives them: see docs/interop.md.

>>> import os, tempfile
>>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
>>> save_file({"weight": np.eye(2, dtype=np.float32), "step": np.array(3)}, path, metadata={"note": "hi"})
>>> load_file(path)["weight"]
array([[1., 0.],
       [0., 1.]], dtype=float32)
>>> load_metadata(path)
{'note': 'hi'}
"""

import dataclasses
import json
import math
import os
import struct

import numpy as np

from tinygen.errors import ArgumentError, CheckpointError, DTypeError, UnsupportedTypeError
from tinygen.serialization import write_atomically

# The safetensors dtypes that NumPy holds, in the order of the reference's `Dtype` enum (increasing
# alignment), by which `save_file` orders the tensors. BF16 and the 8-, 6- and 4-bit floats have no
# NumPy dtype.
DTYPES = {
    "BOOL": np.dtype(np.bool_),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "U16": np.dtype("<u2"),
    "F16": np.dtype("<f2"),
    "I32": np.dtype("<i4"),
    "U32": np.dtype("<u4"),
    "F32": np.dtype("<f4"),
    "C64": np.dtype("<c8"),
    "F64": np.dtype("<f8"),
    "I64": np.dtype("<i8"),
    "U64": np.dtype("<u8"),
}
_CODES = {dtype.newbyteorder("="): code for code, dtype in DTYPES.items()}  # NumPy dtype (native order) -> code
_RANK = {code: rank for rank, code in enumerate(DTYPES)}

HEADER_LENGTH = 8  # bytes of N
MAX_HEADER_SIZE = 100_000_000  # the reference's limit, against a length that asks for all memory
METADATA_KEY = "__metadata__"
_JSON_SPACE = " \t\n\r"


# --- save -----------------------------------------------------------------------------------

def save_file(tensors, filename, metadata=None):
    """Write `tensors` (a dict of str -> ndarray or Tensor) to `filename` as a safetensors file.

    `metadata` (a dict of str -> str, or None) goes into the header's ``__metadata__``. Arrays of
    any byte order and memory layout are written little-endian and row-major. A name that is not
    a str, a dtype without a safetensors code (object, datetime, complex128...) or metadata that is
    not str -> str raise before anything is written; a file-system problem raises `CheckpointError`,
    and an existing file at `filename` is left as it was.
    """
    path = os.fspath(filename)
    arrays = _checked_tensors(tensors)
    header = {} if metadata is None else {METADATA_KEY: _checked_metadata(metadata)}
    codes = {name: _code(array.dtype) for name, array in arrays.items()}
    order = sorted(arrays, key=lambda name: (-_RANK[codes[name]], name))
    offset = 0
    for name in order:
        array = arrays[name]
        header[name] = {"dtype": codes[name], "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the buffer, and so each tensor, starts 8-byte aligned
    if len(text) > MAX_HEADER_SIZE:
        raise ArgumentError(f"cannot save {path!r}: the header would be {len(text):,} bytes, over the format's "
                            f"limit of {MAX_HEADER_SIZE:,} (too many tensors, or too much metadata)")

    def write(file):
        file.write(struct.pack("<Q", len(text)))
        file.write(text)
        for name in order:
            array = arrays[name]
            file.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())

    try:
        write_atomically(path, write)
    except OSError as err:
        raise CheckpointError(f"cannot save {path!r}: {err.strerror or err}") from err


def _checked_tensors(tensors):
    """`tensors` as a dict of name -> ndarray, after checking names, types and dtypes."""
    from tinygen.tensor import Tensor  # NOTE: imported here so tensor.py may import this module

    if not isinstance(tensors, dict):
        raise UnsupportedTypeError(f"save_file takes a dict of name -> array, got {type(tensors).__name__}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise UnsupportedTypeError(f"tensor names must be str, got {name!r} ({type(name).__name__})")
        if name == METADATA_KEY:
            raise ArgumentError(f"{METADATA_KEY!r} is the header's metadata entry, not a tensor name")
        _check_utf8(name, "tensor name")
        array = value.numpy() if isinstance(value, Tensor) else value
        if not isinstance(array, np.ndarray) or isinstance(array, np.ma.MaskedArray):
            raise UnsupportedTypeError(f"tensor {name!r} is a {type(value).__name__}, not a NumPy array or Tensor")
        if array.dtype.newbyteorder("=") not in _CODES:
            raise DTypeError(f"tensor {name!r} has dtype {array.dtype}, which safetensors cannot hold "
                             f"(it holds {', '.join(str(d) for d in _CODES)})")
        arrays[name] = array
    return arrays


def _checked_metadata(metadata):
    if not isinstance(metadata, dict):
        raise UnsupportedTypeError(f"metadata must be a dict of str -> str, got {type(metadata).__name__}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise UnsupportedTypeError(f"metadata must map str to str; got {key!r}: {value!r} "
                                       f"({type(key).__name__}: {type(value).__name__})")
        _check_utf8(key, "metadata key")
        _check_utf8(value, "metadata value")
    return dict(metadata)


def _check_utf8(text, what):
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # a lone surrogate
        raise ArgumentError(f"{what} {text!r} cannot be written as UTF-8 ({err.reason})") from None


# --- load -----------------------------------------------------------------------------------

def load_file(filename):
    """The tensors of the safetensors file `filename`, as a dict of name -> ndarray.

    The arrays are writable, in the file's order of their data, little-endian. Any problem with
    the file raises `CheckpointError`; a dtype NumPy cannot hold (BF16...) raises it too, naming
    the tensor.
    """
    path = os.fspath(filename)
    with _open(path) as file:
        entries, _, start, size = _read_header(file, path)
        buffer = bytearray(size - start)
        if file.readinto(buffer) != len(buffer):
            raise _error(path, "the file got shorter while it was read")
    tensors = {}
    for name, dtype, shape, begin, end in entries:
        count = math.prod(shape)
        array = (np.frombuffer(buffer, dtype, count, begin) if count else np.empty(0, dtype)).reshape(shape)
        if dtype == np.bool_ and count and buffer[begin:end].translate(None, b"\x00\x01"):
            raise _error(path, f"tensor {name!r} (BOOL) holds bytes other than 0 and 1")
        # NOTE: another writer may start a tensor at any byte; NumPy reads it there, compiled kernels may not
        tensors[name] = array if array.flags.aligned else array.copy()
    return tensors


def load_metadata(filename):
    """The header's ``__metadata__`` of the safetensors file `filename` (a dict of str -> str; {} when
    it has none), after the same checks of the header as `load_file`; the tensors are not read."""
    path = os.fspath(filename)
    with _open(path) as file:
        return _read_header(file, path)[1]


def _error(path, problem):
    return CheckpointError(f"cannot load safetensors file {path!r}: {problem}")


def _open(path):
    try:
        return open(path, "rb")
    except FileNotFoundError as err:
        raise _error(path, "no such file") from err
    except OSError as err:
        raise _error(path, "it is a directory" if os.path.isdir(path) else err.strerror or str(err)) from err


def _read_header(file, path):
    """Parse and check the header of the open file; returns (entries, metadata, start of the buffer,
    file size), entries being (name, dtype, shape, begin, end) in the order of the buffer."""
    size = os.fstat(file.fileno()).st_size
    if size < HEADER_LENGTH:
        raise _error(path, f"{size} bytes, too short for the 8-byte header length")
    (n,) = struct.unpack("<Q", file.read(HEADER_LENGTH))
    if n > MAX_HEADER_SIZE:
        raise _error(path, f"the header length {n:,} is over the format's limit of {MAX_HEADER_SIZE:,} bytes")
    if HEADER_LENGTH + n > size:
        raise _error(path, f"the header length {n:,} runs past the end of the file ({size:,} bytes): "
                           "truncated, or not a safetensors file")
    header = _parse_json(file.read(n), path)
    metadata = header.pop(METADATA_KEY, None)
    metadata = {} if metadata is None else metadata  # null: none, as the reference reads it
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise _error(path, f"{METADATA_KEY!r} must map strings to strings, got {json.dumps(metadata)[:80]}")
    entries = sorted((_entry(name, info, path) for name, info in header.items()), key=lambda e: (e[3], e[4]))
    start, end_of_previous, previous = HEADER_LENGTH + n, 0, None
    for name, dtype, shape, begin, end in entries:
        if begin < end_of_previous:
            raise _error(path, f"tensor {name!r} at data_offsets [{begin}, {end}] overlaps tensor {previous!r}, "
                               f"which ends at {end_of_previous}")
        if begin > end_of_previous:
            raise _error(path, f"bytes [{end_of_previous}, {begin}) of the buffer belong to no tensor")
        expected = math.prod(shape) * dtype.itemsize
        if end - begin != expected:
            raise _error(path, f"tensor {name!r} ({_code(dtype)} of shape {list(shape)}) needs {expected:,} bytes, "
                               f"but its data_offsets [{begin}, {end}] give {end - begin:,}")
        end_of_previous, previous = end, name
    if start + end_of_previous != size:
        raise _error(path, f"the tensors' data ends at byte {end_of_previous:,} of the buffer, which holds "
                           f"{size - start:,} bytes: " + ("the file is truncated" if start + end_of_previous > size
                                                          else "extra bytes follow the last tensor"))
    return entries, metadata, start, size


def _parse_json(raw, path):
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _error(path, f"the header is not UTF-8 ({err})") from err
    if not text.lstrip(_JSON_SPACE).startswith("{"):
        raise _error(path, f"the header is not a JSON object: it starts with {text[:16]!r}")
    try:
        header = json.loads(text, object_pairs_hook=_without_duplicates, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, and the hooks' ValueErrors
        raise _error(path, f"the header is not valid JSON ({err})") from err
    if not isinstance(header, dict):
        raise _error(path, "the header is not a JSON object")
    return header


def _without_duplicates(pairs):
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate key {next(n for n in names if names.count(n) > 1)!r}")
    return dict(pairs)


def _refuse_constant(name):
    raise ValueError(f"{name} is not JSON")


def _entry(name, info, path):
    """(name, dtype, shape, begin, end) of one tensor's header entry, after checking its form."""
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        found = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise _error(path, f"tensor {name!r} must have exactly dtype, shape and data_offsets, got {found}")
    code, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if code not in DTYPES:
        raise _error(path, f"tensor {name!r} has dtype {code!r}, which tinygen cannot read into NumPy "
                           f"(it reads {', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_size(s) for s in shape):
        raise _error(path, f"tensor {name!r} has shape {json.dumps(shape)[:80]}, not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(o) for o in offsets) \
            or offsets[0] > offsets[1]:
        raise _error(path, f"tensor {name!r} has data_offsets {json.dumps(offsets)[:80]}, not [begin, end] "
                           "with 0 <= begin <= end")
    return name, DTYPES[code], tuple(shape), offsets[0], offsets[1]


def _is_size(value):
    return type(value) is int and value >= 0


def _code(dtype):
    """The safetensors code of a NumPy dtype of either byte order: "F32" for float32."""
    return _CODES[dtype.newbyteorder("=")]


# --- a tinygen model's weights under PyTorch's names ------------------------------------------

def model_tensors(model, use_ema=True):
    """The weights of a model of `tinygen.models` by the names its PyTorch twin's state dict uses.

    - a GAN: ``generator.<name>`` and ``discriminator.<name>``, as a ``torch.nn.Module`` holding the
      two networks as ``.generator`` and ``.discriminator`` names them. With `use_ema` and
      ``ema_decay`` set, the generator is the one `GAN.sample` draws from: the average of its
      weights, with BatchNorm statistics recomputed for them (`GAN.averaged`).
    - a VAE: its network's state dict (encoder, to_mu, to_logvar, decoder, the VampPrior's
      pseudo_inputs).
    - a DDPM: the UNet's state dict, holding the average of its weights with `use_ema`.

    `use_ema=False` gives the trained weights themselves (the only ones of a model without an average).
    Returns a dict of name -> NumPy array (copies, on the host).
    """
    # NOTE: imported here: the models build on tinygen, which imports this module
    from tinygen.models.diffusion import DDPM
    from tinygen.models.gan import GAN
    from tinygen.models.vae import VAE

    if isinstance(model, GAN):
        G = model.averaged() if use_ema and model.ema is not None else model.generator
        networks = {"generator": G, "discriminator": model.discriminator}
        return {f"{part}.{name}": a for part, net in networks.items() for name, a in net.state_dict().items()}
    if isinstance(model, VAE):
        return model.net.state_dict()
    if isinstance(model, DDPM):
        if not use_ema:
            return model.net.state_dict()
        model.ema.copy_to(model.ema_net)  # the network DDPM.sample fills with the averages
        return model.ema_net.state_dict()
    raise UnsupportedTypeError(f"model_tensors takes a model of tinygen.models, got {type(model).__name__}")


def export_model(model, filename, use_ema=True):
    """Write `model_tensors(model, use_ema)` to the safetensors file `filename`, with the metadata a
    reader needs to rebuild the networks: ``format`` "pt" (PyTorch's names, as safetensors.torch
    writes), ``model`` (its name in `tinygen.models.MODELS`), ``config`` (its Config as JSON),
    ``step``, ``weights`` ("ema" or "trained") and ``tinygen_version``. Returns the tensors."""
    import tinygen
    from tinygen.models import MODELS

    names = [name for name, cls in MODELS.items() if type(model) is cls]
    if not names:
        raise UnsupportedTypeError(f"export_model takes a model of tinygen.models.MODELS, got {type(model).__name__}")
    averaged = use_ema and getattr(model, "ema", None) is not None
    tensors = model_tensors(model, use_ema)
    metadata = {
        "format": "pt",
        "model": names[0],
        "config": json.dumps(dataclasses.asdict(model.config)),
        "step": str(model.step),
        "weights": "ema" if averaged else "trained",
        "tinygen_version": tinygen.__version__,
    }
    save_file(tensors, filename, metadata)
    return tensors
