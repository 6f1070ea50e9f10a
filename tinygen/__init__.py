"""tinygen: GANs, VAEs and diffusion models from scratch on a tiny autograd engine."""

from numpy import float32, float64, int64  # the dtypes, as torch.float32 etc.

from tinygen.backend import (
    device,
    get_default_device,
    get_default_dtype,
    manual_seed,
    set_default_device,
    set_default_dtype,
)
from tinygen.errors import (
    ArgumentError,
    BackendUnavailableError,
    CheckpointError,
    DatasetFormatError,
    DeviceMismatchError,
    DownloadError,
    DTypeError,
    ShapeError,
    StateDictError,
    TinygenError,
    UnsupportedTypeError,
)
from tinygen.serialization import load, save
from tinygen.safetensors import load_file as load_safetensors, save_file as save_safetensors
from tinygen.tensor import (
    Function,
    Tensor,
    arange,
    cat,
    full,
    is_grad_enabled,
    no_grad,
    ones,
    ones_like,
    rand,
    randn,
    randn_like,
    result_type,
    stack,
    tensor,
    zeros,
    zeros_like,
)
from tinygen import nn, optim  # noqa: E402  (after Tensor: both build on it)

__version__ = "0.1.0"
