"""Loading data pickles without running code: only numpy arrays, lists, dicts, bytes, str and
numbers may appear in the file.

>>> import pickle, io, numpy as np
>>> safe_load(io.BytesIO(pickle.dumps({"data": np.arange(3)})))["data"].tolist()
[0, 1, 2]
>>> safe_load(io.BytesIO(pickle.dumps(print)))
Traceback (most recent call last):
...
deqkit.train.errors.DataError: the data pickle names builtins.print; only numpy arrays, lists, dicts, bytes, str and numbers are allowed
"""  # noqa: E501

from __future__ import annotations

import pickle
from typing import IO, Any

__all__ = ["safe_load"]

# What numpy arrays pickle to (module, name); numpy 2 moved multiarray under numpy._core.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        from ..train.errors import DataError

        raise DataError(
            f"the data pickle names {module}.{name}; only numpy arrays, lists, dicts, bytes, "
            "str and numbers are allowed"
        )


def safe_load(fh: IO[bytes], encoding: str = "ASCII") -> Any:
    """``pickle.load`` restricted to plain data (see the module docstring)."""
    return _Restricted(fh, encoding=encoding).load()
