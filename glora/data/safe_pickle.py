"""Numpy arrays out of pickle files without letting the file run anything else.

A pickle names the callables that rebuild its objects (``GLOBAL`` / ``STACK_GLOBAL``),
and plain ``pickle.load`` imports and calls whatever it names (``os.system`` included).
``NumpyOnlyUnpickler`` hands out only the three globals numpy needs to rebuild an
ndarray, under both of numpy's module names (``numpy.core`` before 2.0, ``numpy._core``
from 2.0, so files written by either load on either); any other global is refused before
it is imported. Persistent ids stay refused (``pickle.Unpickler``'s default).

Those three are exactly what animal-mnist's files name (``pickletools.dis``: protocol 4,
``numpy.core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``), which is also
what numpy writes at protocols 3 and 4. Protocol 5 (``numpy._core.numeric._frombuffer``)
and protocol 2 (``_codecs.encode``) are refused: no file read here needs them.
"""
from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

from glora.run.errors import DataError

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # a numpy 1.x without the numpy._core alias
    from numpy.core.multiarray import _reconstruct

__all__ = ["ALLOWED_GLOBALS", "NumpyOnlyUnpickler", "read_array"]

#: (module, name) a pickle may reference -> the object it gets. ``_reconstruct`` makes the
#: empty array, ``ndarray`` is its type, ``dtype`` rebuilds the element type; ``BUILD``
#: then fills the array through ``ndarray.__setstate__`` (no global involved).
ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` answers only ``ALLOWED_GLOBALS``; any other
    global is a ``DataError`` naming ``source`` and the global, raised before import."""

    def __init__(self, file, source: str, owner: str, fix: str):
        super().__init__(file)
        self.source, self.owner, self.fix = source, owner, fix

    def find_class(self, module: str, name: str) -> object:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(f"{self.source}: refused to unpickle global '{module}.{name}' "
                            f"(only numpy arrays are read from {self.owner}'s files; {self.fix})") from None


def read_array(path: Path, owner: str, fix: str) -> np.ndarray:
    """The one ndarray pickled in ``path`` (gzipped when it ends in ``.gz``). ``owner``
    (who shipped the file) and ``fix`` complete the one-line error for a refused global,
    an unreadable file, or a file that holds anything but an ndarray."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            obj = NumpyOnlyUnpickler(handle, str(path), owner, fix).load()
    except DataError:
        raise
    except Exception as err:  # a truncated or foreign file: pickle, gzip or numpy errors
        raise DataError(f"{path}: not a readable pickle of a numpy array ({type(err).__name__}: {err}); {fix}") from None
    if type(obj) is not np.ndarray or obj.dtype.hasobject:
        what = f"an array of {obj.dtype}" if isinstance(obj, np.ndarray) else f"a {type(obj).__name__}"
        raise DataError(f"{path}: holds {what}, not a numpy array of numbers; {fix}")
    return obj
