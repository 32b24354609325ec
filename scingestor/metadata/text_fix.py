"""Text that is not UTF-8 in scan files: kept as Latin-1, never a failed scan.

Why
    Older writers store titles, comments and FIO headers in Latin-1 (``café``
    as the byte ``0xe9``).  nxstools 4.70 decodes every text as UTF-8:
    ``nxsfileinfo metadata`` of such a NeXus file stops in its JSON encoder
    (``'utf-8' codec can't decode byte 0xe9``) and a FIO file "cannot be
    opened".  One byte would keep the whole scan out of SciCat.

Policy (documented in ``docs/bad-input.md``)
    Text that is valid UTF-8 is read as before.  Text that is not is decoded
    as Latin-1: every byte is a character there, so nothing is lost or
    replaced, and a real Latin-1 text comes out right (``café``).  The scan is
    ingested; nxsfileinfo writes one line to stderr, starting with
    :data:`MARK`, naming the file and the fields (NeXus) or lines (FIO) that
    were decoded so; the runner logs it as ONE warning naming the scan
    (:mod:`scingestor.metadata.runner`).

How
    * ``numpyEncoder.encode`` of nxstools (both encoders used for the JSON
      output) first walks the metadata and decodes bytes that are not UTF-8
      as Latin-1, noting the field's path;
    * ``open`` as nxstools' ``nxsfileinfo`` module sees it reads text files
      (mode ``r`` without an encoding: the FIO file, JSON inputs) as UTF-8,
      else as Latin-1, noting the line numbers; any other ``open`` is the
      builtin one;
    * ``Metadata.run`` and ``Attachment.run`` note the file they read and
      write the collected line to stderr when they end.

It is installed with the thumbnail correction (:func:`apply`, called by
:func:`scingestor.metadata.nxstools_fix.apply`), so both the warm workers
and nxsfileinfo run as a command get it.
"""

from __future__ import annotations

import builtins
import functools
import io
import os
import sys
from typing import Any, Callable, Dict, List, Tuple

#: the start of the stderr line that reports text kept as Latin-1
MARK = "scingestor-warning: "
_APPLIED = "_scingestor_text_fix"

#: (file, what) noted during one nxsfileinfo run: what = field path or "line N"
_noted: List[Tuple[str, str]] = []
_current: Dict[str, str] = {"file": ""}


def decode(data: bytes, where: str = "") -> str:
    """*data* as UTF-8, else as Latin-1 (noting *where*)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        if where:
            _noted.append((_current["file"], where))
        return data.decode("latin-1")


def _clean(value: Any, path: str) -> Any:
    """*value* with every non-UTF-8 bytes text replaced by its Latin-1 reading."""
    if isinstance(value, bytes):  # numpy.bytes_ too
        try:
            value.decode("utf-8")
        except UnicodeDecodeError:
            return decode(value, f"field '{path}'")
        return value
    if isinstance(value, dict):
        return {
            key: _clean(item, f"{path}.{key}" if path else str(key)) for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_clean(item, path) for item in value]
    kind = getattr(getattr(value, "dtype", None), "kind", "")
    if kind in ("S", "O") and hasattr(value, "tolist"):
        return _clean(value.tolist(), path)
    return value


def _text_lines(data: bytes) -> str:
    """A whole text file: UTF-8, else Latin-1 with its non-UTF-8 lines noted."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    bad = []
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            bad.append(number)
    shown = ", ".join(str(number) for number in bad[:5]) + (", ..." if len(bad) > 5 else "")
    _noted.append((_current["file"], f"line{'s' if len(bad) > 1 else ''} {shown}"))
    return data.decode("latin-1")


def _open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
    """``open`` for nxsfileinfo: text read without an encoding falls back to Latin-1."""
    if mode in ("r", "rt") and not args and not kwargs.get("encoding"):
        with builtins.open(file, "rb") as handle:
            data = handle.read()
        if _current["file"] == "":
            _current["file"] = str(file)
        return io.StringIO(_text_lines(data))
    return builtins.open(file, mode, *args, **kwargs)


def report() -> str:
    """The one stderr line for what was noted (empty when nothing), and forget it."""
    if not _noted:
        return ""
    files: Dict[str, List[str]] = {}
    for file, where in _noted:
        files.setdefault(file, [])
        if where not in files[file]:
            files[file].append(where)
    _noted.clear()
    parts = [
        f"{file or '(input)'}: text not UTF-8 in "
        + ", ".join(wheres[:8])
        + (", ..." if len(wheres) > 8 else "")
        for file, wheres in files.items()
    ]
    return MARK + "; ".join(parts) + ": kept as Latin-1"


def _refuse_empty(path: str) -> None:
    """A scan file of zero bytes is refused, FIO like NeXus: exit 255 with one line.

    nxstools refuses an empty NeXus file (it cannot be opened) but reads an
    empty FIO file as a scan without data and writes a dataset from the
    beamtime metadata alone.  A zero-byte file is one still being written or
    one whose writer failed: like the NeXus file it is a failed generation,
    retried within the ingestion rules and then given up with its reason.
    """
    try:
        empty = bool(path) and os.path.isfile(path) and os.path.getsize(path) == 0
    except OSError:
        return
    if empty:
        sys.stderr.write(f"nxsfileinfo: File '{path}' is empty (0 bytes): nothing to describe\n")
        raise SystemExit(255)


def _say_why_nothing_was_written(options: Any) -> None:
    """nxsfileinfo exits 0 without output when a NeXus file has no entry to describe: say so.

    The pipeline then reports the scan with this reason (one line) instead
    of a bare "metadata missing after generation".
    """
    output = getattr(options, "output", None)
    arguments = getattr(options, "args", None) or []
    if not output or not arguments or os.path.exists(output):
        return
    names = getattr(options, "entrynames", None)
    names = "" if names in (None, "", "''", '""') else names
    classes = getattr(options, "entryclasses", None) or "NXentry"
    what = f"no {classes} named '{names}'" if names else f"no {classes}"
    sys.stderr.write(f"nxsfileinfo: {arguments[0]}: {what} in it: nothing written\n")


def _noting_file(run: Callable[..., Any]) -> Callable[..., Any]:
    """A runner's ``run`` that notes its input file and reports at its end."""

    @functools.wraps(run)
    def wrapped(self: Any, options: Any) -> Any:
        _noted.clear()
        arguments = getattr(options, "args", None) or [""]
        _current["file"] = str(arguments[0])
        _refuse_empty(_current["file"])
        try:
            result = run(self, options)
            _say_why_nothing_was_written(options)
            return result
        finally:
            line = report()
            if line:
                sys.stderr.write(line + "\n")
            _current["file"] = ""

    setattr(wrapped, _APPLIED, True)
    return wrapped


def _fix_attributes() -> None:
    """h5py attributes of fixed-length bytes that are not UTF-8: read as Latin-1.

    nxstools' h5py reader decodes such an attribute as UTF-8 when it reads
    it (the JSON encoder never sees the bytes).
    """
    try:
        from nxstools.h5pywriter import H5PYAttribute
    except Exception:  # no h5py reader: nothing to correct
        return
    read = H5PYAttribute.read
    if getattr(read, _APPLIED, False):
        return

    @functools.wraps(read)
    def corrected(self: Any) -> Any:
        try:
            return read(self)
        except UnicodeDecodeError:
            raw = self._h5object[0][self.name]
            return decode(bytes(raw), f"attribute '{self.path}'")

    setattr(corrected, _APPLIED, True)
    H5PYAttribute.read = corrected


def apply() -> bool:
    """Install the fallback into the imported nxstools (once); True when in place."""
    try:
        from nxstools import nxsfileinfo, nxsfileparser
    except Exception:  # no nxstools here: the command will report it
        return False
    encoder = nxsfileparser.numpyEncoder
    if not getattr(encoder.encode, _APPLIED, False):
        original = encoder.encode

        def encode(self: Any, obj: Any, *args: Any, **kwargs: Any) -> Any:
            return original(self, _clean(obj, ""), *args, **kwargs)

        setattr(encode, _APPLIED, True)
        encoder.encode = encode
    nxsfileinfo.open = _open
    _fix_attributes()
    for name in ("Metadata", "Attachment"):
        runner = getattr(nxsfileinfo, name, None)
        if runner is not None and not getattr(runner.run, _APPLIED, False):
            runner.run = _noting_file(runner.run)
    return True
