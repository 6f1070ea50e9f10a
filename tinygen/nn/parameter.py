"""`Parameter`: a tensor that a `Module` registers as learnable."""

from tinygen.tensor import Tensor


class Parameter(Tensor):
    """A leaf tensor that requires a gradient and is listed by `Module.parameters()`.

    >>> p = Parameter([1.0, 2.0])
    >>> p.requires_grad
    True
    """

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()
