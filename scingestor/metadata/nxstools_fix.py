"""Correction of one nxstools behaviour: no NeXus thumbnail when the title is a scalar.

What it corrects
    nxstools 4.70.0 (``nxsfileinfo attachment``) with numpy >= 2 and h5py.
    Beamline writers store the NXentry ``title`` as a *scalar* string.
    nxstools reads it back as a 0-d numpy array: ``filewriter.first`` no
    longer unwraps 0-d arrays under numpy 2.  ``Attachment._plot1d`` puts
    that array into its plot parameters, ``json.dumps`` raises TypeError,
    and the ``try`` in ``Attachment._nxsplot`` swallows it.  Symptom:
    ``nxsfileinfo attachment scan.nxs`` exits 0 and writes nothing, so no
    NeXus scan gets a thumbnail, yet each scan pays for the plot.

How
    ``Attachment._plot1d`` and ``Attachment._plot2d`` are wrapped so that
    their text arguments (title, labels, scan command) arrive as Python
    strings: a 0-d numpy array of text is replaced by its item (bytes
    decoded as UTF-8).  Nothing else changes; a file whose title nxstools
    already reads as a string is plotted exactly as before (same
    thumbnail, same caption).

Where
    :func:`apply` runs in the warm nxsfileinfo workers
    (:mod:`scingestor.metadata.inprocess`); when nxsfileinfo runs as a
    command, the runner starts ``python -m scingestor.metadata.nxstools_fix
    <nxsfileinfo arguments>``, which applies it and then calls nxstools'
    own ``nxsfileinfo`` main with the same arguments.

When to drop it
    ``tests/test_nxstools_fix.py::test_unpatched_nxstools_still_drops_the_thumbnail``
    fails once an nxstools release writes the thumbnail by itself; then
    delete the thumbnail correction and that test, but keep :func:`apply`
    and the ``-m`` entry point: they also install the bad-input policies of
    :mod:`~scingestor.metadata.text_fix` (text not UTF-8) and
    :mod:`~scingestor.metadata.link_fix` (symlinks), see ``docs/bad-input.md``.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, List, Optional, Sequence

PROGRAM = "nxsfileinfo"
#: the nxstools release this was written against (the fault is still there in it)
CORRECTS = "nxstools 4.70.0 with numpy >= 2: scalar NXentry title -> no NeXus thumbnail"
_MARK = "_scingestor_scalar_text_fix"


def _text(value: Any) -> Any:
    """A 0-d numpy array of text as a Python ``str``; anything else unchanged."""
    if getattr(value, "ndim", None) != 0 or not hasattr(value, "item"):
        return value
    if getattr(getattr(value, "dtype", None), "kind", "") not in ("U", "S", "O"):
        return value
    item = value.item()
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    return item if isinstance(item, str) else value


def _wrap(method: Callable[..., Any], text_args: Sequence[str]) -> Callable[..., Any]:
    """*method* with its text arguments passed through :func:`_text`."""
    import inspect

    signature = inspect.signature(method)

    @functools.wraps(method)
    def corrected(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        for name in text_args:
            if name in bound.arguments:
                bound.arguments[name] = _text(bound.arguments[name])
        return method(*bound.args, **bound.kwargs)

    setattr(corrected, _MARK, True)
    return corrected


def apply() -> bool:
    """Install the correction into the imported nxstools (once); True when in place."""
    try:
        from nxstools.nxsfileinfo import Attachment
    except Exception:  # no nxstools here: the command will report it
        return False
    from . import link_fix, text_fix

    text_fix.apply()  # non-UTF-8 text kept as Latin-1
    link_fix.apply()  # symlinks out of the beamtime, dangling or looping: not followed
    targets = {
        "_plot1d": ("xlabel", "ylabel", "title", "scancmd"),
        "_plot2d": ("slabel", "title", "scancmd"),
    }
    done = True
    for name, text_args in targets.items():
        method = getattr(Attachment, name, None)
        if method is None:  # nxstools changed its insides: leave it alone
            done = False
            continue
        if not getattr(method, _MARK, False):
            setattr(Attachment, name, _wrap(method, text_args))
    return done


def run_nxsfileinfo(argv: Sequence[str]) -> int:
    """Run nxstools' ``nxsfileinfo`` main with *argv* (its arguments), corrected."""
    apply()
    from nxstools import nxsfileinfo

    saved = sys.argv
    sys.argv = [PROGRAM, *argv]
    try:
        nxsfileinfo.main()
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        sys.stderr.write(f"{stop.code}\n")
        return 1
    finally:
        sys.argv = saved
    return 0


def command(argv: Sequence[str], python: Optional[str] = None) -> List[str]:
    """The argument vector that runs ``nxsfileinfo`` command line *argv* corrected.

    ``argv[0]`` (the program) is replaced by this interpreter running this
    module; every other argument is passed on unchanged.
    """
    return [python or sys.executable, "-m", __name__, *list(argv)[1:]]


if __name__ == "__main__":
    import os

    os.environ.setdefault("MPLBACKEND", "Agg")
    sys.exit(run_nxsfileinfo(sys.argv[1:]))
