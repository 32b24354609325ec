"""Test-data builders: scans, beamtimes, list files and plots as beamlines write them.

The ingestor never reads scan files itself; it runs nxstools' ``nxsfileinfo``
on them and posts what that produces.  So the tests, the demo and the
benchmarks need files that ``nxsfileinfo`` reads the way it reads the files
of a real beamline: NeXus masters shaped like NeXDaTaS writes them, FIO
files like the Sardana/Online writers produce, beamtime metadata files with
every field the facility fills, and dataset list files appended to the way
the sardana macros append.  Every builder here is a plain function that
writes deterministic content (the same arguments give the same data) and
returns the path it wrote.

The shapes follow the reference installation in
``shared/fixtures/reference-installation`` (``generated/*.scan.json`` is what
``nxsfileinfo metadata`` made from such files there).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = [
    "DEFAULT_START_TIME",
    "DEFAULT_END_TIME",
    "BEAMTIME_TEMPLATE",
    "PathLike",
    "write_nexus_scan",
    "write_multi_entry_nexus",
    "write_fio_scan",
    "write_png",
    "png_chunks",
    "make_beamtime",
    "beamtime_file_name",
    "make_scan",
    "detector_file_paths",
    "append_list_line",
    "nxsfileinfo_executable",
    "run_nxsfileinfo",
    "default_scan_command",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
TimeLike = Union[str, _dt.datetime]

#: start of every built scan unless told otherwise (the reference installation's scans)
DEFAULT_START_TIME = _dt.datetime(
    2026, 11, 20, 10, 0, 0, tzinfo=_dt.timezone(_dt.timedelta(hours=1))
)
#: end of every built scan unless told otherwise: one minute later
DEFAULT_END_TIME = DEFAULT_START_TIME + _dt.timedelta(minutes=1)

#: the beamtime file of the installation whose output is in ``generated/``:
#: the fields of ``data/beamtime-metadata-99001234.json`` with the e-mails and
#: title that the generated JSON shows (``appuser@example.com``, ``H2O``)
BEAMTIME_TEMPLATE: Dict[str, Any] = {
    "applicant": {
        "email": "appuser@example.com",
        "institute": "Academy of Sciences",
        "lastname": "Ouruser",
        "userId": "990123",
        "username": "John_Ouruser",
    },
    "beamline": "p00",
    "beamlineAlias": "P00",
    "beamlineSetup": "Microprobe",
    "beamtimeId": "99001234",
    "contact": "BSName",
    "corePath": "",
    "eventEnd": "2026-11-29 09:00:00",
    "eventStart": "2026-11-20 09:00:00",
    "facility": "PETRA III",
    "generated": "2026-11-20 08:00:00",
    "leader": {
        "email": "leader@example.com",
        "institute": "Academy of Sciences",
        "lastname": "Smithson",
        "userId": "9987",
        "username": "psmithson",
    },
    "pi": {
        "email": "appuser@example.com",
        "institute": "Academy of Sciences",
        "lastname": "Ouruser",
        "userId": "990123",
        "username": "John_Ouruser",
    },
    "proposalId": "99991173",
    "proposalType": "I",
    "title": "H2O distribution",
    "unixId": "None",
    "users": {
        "doorDb": ["asdgf", "asaaa", "asdsd", "jarre"],
        "special": [],
        "unknown": [],
    },
}

# NX_class of groups that ``extra`` creates on the way, by name
_GROUP_CLASSES = {
    "instrument": "NXinstrument",
    "sample": "NXsample",
    "data": "NXdata",
    "source": "NXsource",
    "monochromator": "NXmonochromator",
    "detector": "NXdetector",
    "monitor": "NXmonitor",
    "user": "NXuser",
    "collection": "NXcollection",
}

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def _prepare(path: PathLike) -> Path:
    """The path as a Path, its directory created (builders write anywhere)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def _iso(value: TimeLike) -> str:
    """NeXDaTaS time text: ``2026-11-20T10:00:00.000000+0100``."""
    if isinstance(value, str):
        return value
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f%z")


def _fio_time(value: TimeLike) -> str:
    """FIO time text as the online writer prints it: ``Thu Nov 20 10:00:00 2026``.

    Built by hand (not ``%a``/``%b``) so the text does not depend on the locale.
    """
    if isinstance(value, str):
        return value
    days = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    months = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    return (
        f"{days[value.weekday()]} {months[value.month - 1]} {value.day:2d} "
        f"{value:%H:%M:%S} {value.year}"
    )


def _counts(points: int, index: int = 0) -> List[int]:
    """A peak over the scan: plausible detector counts, the same every time."""
    centre = (points - 1) / 2.0
    width = max(points / 4.0, 1.0)
    return [
        int(round(1000.0 * math.exp(-(((i - centre) / width) ** 2)))) + 10 + 7 * index + i
        for i in range(points)
    ]


def _image(shape: Sequence[int], index: int = 0) -> List[Any]:
    """Nested lists of unsigned ints with a diagonal pattern (2-D or 3-D)."""
    if len(shape) == 2:
        rows, cols = shape
        return [[(r * 3 + c * 5 + index * 11) % 251 for c in range(cols)] for r in range(rows)]
    frames = shape[0]
    return [_image(shape[1:], index + frame) for frame in range(frames)]


# ---------------------------------------------------------------------------
# NeXus
# ---------------------------------------------------------------------------


def _set_nx_class(group: Any, nx_class: str) -> None:
    group.attrs["NX_class"] = nx_class


def _string_field(group: Any, name: str, value: str, scalar: bool = True) -> Any:
    """A UTF-8 variable-length string field: scalar, or of shape (1,).

    nxstools' writer (which NeXDaTaS uses) makes a scalar when a string
    field has no shape and ``[1]`` otherwise; nxsfileinfo's metadata output
    is the same for both, its plots are not (see :func:`write_nexus_scan`).
    """
    import h5py

    return group.create_dataset(
        name, data=value if scalar else [value], dtype=h5py.string_dtype("utf-8"), track_times=False
    )


def _field(group: Any, name: str, value: Any) -> Any:
    """One NeXus field: strings as scalar UTF-8 variable-length, the rest via numpy."""
    import numpy

    if isinstance(value, str):
        return _string_field(group, name, value)
    return group.create_dataset(name, data=numpy.asarray(value), track_times=False)


def _require_group(parent: Any, name: str) -> Any:
    if name in parent:
        return parent[name]
    group = parent.create_group(name)
    _set_nx_class(group, _GROUP_CLASSES.get(name, "NXcollection"))
    return group


def _add_extra(parent: Any, key: str, value: Any) -> None:
    """Place one ``extra`` item: ``"a/b/c"`` creates the groups ``a``, ``b``."""
    parts = [part for part in key.split("/") if part]
    if not parts:
        raise ValueError(f"empty NeXus path in extra: {key!r}")
    group = parent
    for part in parts[:-1]:
        group = _require_group(group, part)
    name = parts[-1]
    if isinstance(value, Mapping) and "value" in value:
        if name in group:
            del group[name]
        field = _field(group, name, value["value"])
        for attr, attr_value in value.items():
            if attr != "value":
                field.attrs[attr] = attr_value
    elif isinstance(value, Mapping):
        child = group[name] if name in group else group.create_group(name)
        child.attrs["NX_class"] = value.get(
            "NX_class", child.attrs.get("NX_class", _GROUP_CLASSES.get(name, "NXcollection"))
        )
        for child_key, child_value in value.items():
            if child_key != "NX_class":
                _add_extra(child, child_key, child_value)
    else:
        if name in group:
            del group[name]
        _field(group, name, value)


def default_scan_command(axis: str = "pos", points: int = 5) -> str:
    """The sardana scan command of a built scan: ``ascan <axis> 0.0 <n-1> <n-1> 0.1``."""
    return f"ascan {axis} 0.0 {float(points - 1)} {max(points - 1, 1)} 0.1"


def _write_entry(
    h5: Any,
    entry: str,
    *,
    index: int,
    title: str,
    sample: str,
    points: int,
    start_time: TimeLike,
    end_time: TimeLike,
    signal: str,
    axis: str,
    image_shape: Optional[Sequence[int]],
    extra: Optional[Mapping[str, Any]],
    instrument: str,
    experiment_identifier: str,
    detector: str,
    scalar_strings: bool,
    scan_command: Optional[str],
    image_signal: bool,
) -> None:
    if points < 1:
        raise ValueError(f"points must be at least 1, got {points}")
    if image_signal and image_shape is None:
        raise ValueError("image_signal needs an image_shape")
    group = h5.create_group(entry)
    _set_nx_class(group, "NXentry")
    group.attrs["default"] = "data"  # NeXus: where a viewer finds the plot
    scalar = scalar_strings
    _string_field(group, "start_time", _iso(start_time), scalar)
    _string_field(group, "end_time", _iso(end_time), scalar)
    _string_field(group, "title", title, scalar)
    _string_field(group, "experiment_identifier", experiment_identifier, scalar)
    program = _string_field(group, "program_name", "NexDaTaS", scalar)
    command = default_scan_command(axis, points) if scan_command is None else scan_command
    if command:
        program.attrs["scan_command"] = command

    inst = group.create_group("instrument")
    _set_nx_class(inst, "NXinstrument")
    _string_field(inst, "name", instrument, scalar)

    smp = group.create_group("sample")
    _set_nx_class(smp, "NXsample")
    _string_field(smp, "name", sample, scalar)

    data = group.create_group("data")
    _set_nx_class(data, "NXdata")
    data.attrs["signal"] = detector if image_signal else signal
    data.attrs["axes"] = axis
    _field(data, signal, _counts(points, index))
    _field(data, axis, [float(i) for i in range(points)])

    if image_shape is not None:
        import numpy

        shape = tuple(int(n) for n in image_shape)
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise ValueError(f"image_shape must be 2-D or 3-D and positive, got {image_shape}")
        det = inst.create_group(detector)
        _set_nx_class(det, "NXdetector")
        image = det.create_dataset(
            "data", data=numpy.asarray(_image(shape, index), dtype="uint32"), track_times=False
        )
        # NeXDaTaS links detector data into NXdata under the detector's name
        data[detector] = image

    for key, value in (extra or {}).items():
        _add_extra(group, key, value)


def _nexus_file(path: PathLike, entries: Sequence[Tuple[str, Dict[str, Any]]]) -> Path:
    import h5py

    target = _prepare(path)
    # libver="earliest" and no time tracking keep the bytes the same per call
    with h5py.File(target, "w", libver="earliest", track_order=False) as h5:
        h5.attrs["NX_class"] = "NXroot"
        h5.attrs["file_name"] = target.name
        h5.attrs["file_time"] = entries[0][1]["start_time"] if entries else ""
        if entries:
            h5.attrs["default"] = entries[0][0]
        for index, (name, kwargs) in enumerate(entries):
            _write_entry(h5, name, index=index, **kwargs)
    return target


def _entry_kwargs(
    path: PathLike,
    *,
    title: Optional[str],
    sample: str,
    points: int,
    start_time: Optional[TimeLike],
    end_time: Optional[TimeLike],
    signal: str,
    axis: str,
    image_shape: Optional[Sequence[int]],
    extra: Optional[Mapping[str, Any]],
    instrument: str,
    experiment_identifier: str,
    detector: str,
    scalar_strings: bool,
    scan_command: Optional[str] = None,
    image_signal: bool = False,
) -> Dict[str, Any]:
    return dict(
        title=title if title is not None else Path(path).stem,
        sample=sample,
        points=points,
        start_time=_iso(start_time if start_time is not None else DEFAULT_START_TIME),
        end_time=_iso(end_time if end_time is not None else DEFAULT_END_TIME),
        signal=signal,
        axis=axis,
        image_shape=image_shape,
        extra=extra,
        instrument=instrument,
        experiment_identifier=experiment_identifier,
        detector=detector,
        scalar_strings=scalar_strings,
        scan_command=scan_command,
        image_signal=image_signal,
    )


def write_nexus_scan(
    path: PathLike,
    *,
    title: Optional[str] = None,
    sample: str = "water",
    points: int = 5,
    start_time: Optional[TimeLike] = None,
    end_time: Optional[TimeLike] = None,
    entry: str = "scan",
    signal: str = "counts",
    axis: str = "pos",
    image_shape: Optional[Sequence[int]] = None,
    extra: Optional[Mapping[str, Any]] = None,
    instrument: str = "P00",
    experiment_identifier: str = "99001234",
    detector: str = "pilatus",
    scalar_strings: bool = True,
    scan_command: Optional[str] = None,
    image_signal: bool = False,
) -> Path:
    """Write a NeXus master file like NeXDaTaS writes it at DESY.

    One NXentry ``entry`` with ``start_time``, ``end_time``, ``title``
    (default: the file's stem), ``experiment_identifier`` and
    ``program_name``, whose ``scan_command`` attribute holds the sardana
    command (default :func:`default_scan_command`; ``""``: none);
    NXinstrument ``instrument`` with ``name``; NXsample ``sample`` with
    ``name``; NXdata ``data`` whose ``signal``/``axes`` attributes name the
    1-D fields ``signal`` (integer counts, a peak) and ``axis`` (0.0, 1.0,
    …).  The file's and the entry's ``default`` attributes point to the
    entry and to ``data``.  Strings are scalars, as the writers store them.
    ``nxsfileinfo metadata`` turns it into the scientificMetadata of
    ``generated/scan_00001.scan.json`` plus ``ScanCommand``, ``default``
    and the ``scan_command`` of ``program_name``.

    ``image_shape`` (2-D: one image, 3-D: frames × rows × columns) adds an
    NXdetector ``instrument/<detector>`` with a ``data`` field, linked into
    NXdata as ``<detector>`` (plot it with ``nxsfileinfo attachment -s
    <detector>``); with ``image_signal`` the NXdata's ``signal`` names
    that image (an area-detector scan: a 2-D or 3-D signal).

    ``extra`` maps entry-relative paths (``"sample/temperature"``) to
    values: a plain value is a field; ``{"value": v, "units": "K"}`` is a
    field with attributes; any other mapping is a group (its ``NX_class``
    key, else a class guessed from the name, else NXcollection) whose other
    keys are children.  Missing groups on the path are created.
    Times are datetimes or ready-made strings.

    ``scalar_strings=False`` writes the string fields with shape (1,)
    instead of scalar, as some older writers did.  The metadata output is
    identical in both forms; plain nxstools 4.70 (numpy 2) draws
    ``nxsfileinfo attachment`` thumbnails only for this form, the ingestor
    for both (:mod:`scingestor.metadata.nxstools_fix`).
    """
    kwargs = _entry_kwargs(
        path,
        title=title,
        sample=sample,
        points=points,
        start_time=start_time,
        end_time=end_time,
        signal=signal,
        axis=axis,
        image_shape=image_shape,
        extra=extra,
        instrument=instrument,
        experiment_identifier=experiment_identifier,
        detector=detector,
        scalar_strings=scalar_strings,
        scan_command=scan_command,
        image_signal=image_signal,
    )
    return _nexus_file(path, [(entry, kwargs)])


def write_multi_entry_nexus(path: PathLike, entries: Sequence[str], **kw: Any) -> Path:
    """Write one NeXus file with an NXentry per name in ``entries``.

    For the ``base::/entry;scan`` list-line form, where one master holds
    several scans.  ``kw`` are :func:`write_nexus_scan`'s keywords, applied
    to every entry; ``title`` defaults to the entry's name.  The entries'
    counts differ (each is offset by its index) so they can be told apart.
    """
    if not entries:
        raise ValueError("write_multi_entry_nexus needs at least one entry")
    if len(set(entries)) != len(entries):
        raise ValueError(f"entry names must be unique: {list(entries)}")
    kw = dict(kw)
    if "entry" in kw:
        raise TypeError("write_multi_entry_nexus takes the entry names from 'entries'")
    title = kw.pop("title", None)
    defaults: Dict[str, Any] = dict(
        sample="water",
        points=5,
        start_time=None,
        end_time=None,
        signal="counts",
        axis="pos",
        image_shape=None,
        extra=None,
        instrument="P00",
        experiment_identifier="99001234",
        detector="pilatus",
        scalar_strings=True,
        scan_command=None,
        image_signal=False,
    )
    unknown = set(kw) - set(defaults)
    if unknown:
        raise TypeError(f"unexpected keyword arguments: {sorted(unknown)}")
    defaults.update(kw)
    built = []
    for name in entries:
        entry_kw = _entry_kwargs(path, title=title if title is not None else name, **defaults)
        built.append((name, entry_kw))
    return _nexus_file(path, built)


# ---------------------------------------------------------------------------
# FIO
# ---------------------------------------------------------------------------


def _fio_number(value: float) -> str:
    return repr(float(value))


def write_fio_scan(
    path: PathLike,
    *,
    title: Optional[str] = None,
    points: int = 5,
    start_time: Optional[TimeLike] = None,
    end_time: Optional[TimeLike] = None,
    user: str = "petra3",
    axis: str = "pos",
    counters: Sequence[str] = ("counts",),
    parameters: Optional[Mapping[str, Any]] = None,
) -> Path:
    """Write a FIO scan file like ``data/mymeta2_00011.fio``.

    ``%c`` comments: ``title`` (the scan command; default ``<stem> ascan
    <axis> 0 <points-1> <points-1> 0.1``) and ``user <user> Acquisition
    started at <start_time>``; ``%p`` parameters ``name = value`` (default
    ``energy = 12000.0``; note nxsfileinfo ``eval``s them, so give Python
    literals); ``%d`` data: ``Col n name DOUBLE`` lines then one row per
    point (axis, counters, timestamp), ending with ``! Acquisition ended
    at <end_time>``.  Without ``-e`` nxsfileinfo yields ``ScanCommand``,
    ``comments``, ``parameters``, ``start_time`` and ``end_time``.
    """
    if points < 1:
        raise ValueError(f"points must be at least 1, got {points}")
    target = _prepare(path)
    start = start_time if start_time is not None else DEFAULT_START_TIME
    end = end_time if end_time is not None else DEFAULT_END_TIME
    command = (
        title
        if title is not None
        else f"{target.stem} ascan {axis} 0 {points - 1} {points - 1} 0.1"
    )
    params = dict(parameters) if parameters is not None else {"energy": 12000.0}
    lines = [
        "!",
        "! Comments",
        "!",
        "%c",
        command,
        f"user {user} Acquisition started at {_fio_time(start)}",
        "!",
        "! Parameter",
        "!",
        "%p",
    ]
    lines += [
        f"{name} = {value!r}" if not isinstance(value, str) else f"{name} = {value}"
        for name, value in params.items()
    ]
    lines += ["!", "! Data", "!", "%d"]
    columns = [axis, *counters, "timestamp"]
    lines += [f" Col {number} {name} DOUBLE" for number, name in enumerate(columns, 1)]
    values = [_counts(points, index) for index in range(len(counters))]
    for i in range(points):
        row = [float(i), *(float(column[i]) for column in values), 0.5 + 1.1 * i]
        lines.append(" " + " ".join(_fio_number(value) for value in row))
    lines.append(f"! Acquisition ended at {_fio_time(end)}")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


# ---------------------------------------------------------------------------
# PNG
# ---------------------------------------------------------------------------


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def write_png(path: PathLike, width: int = 16, height: int = 16, seed: int = 0) -> Path:
    """Write a small valid 8-bit RGB PNG with a pattern chosen by ``seed``.

    zlib and struct only, so the tests need no imaging library; what a
    plot file of a scan looks like to ``nxsfileinfo attachment``.
    """
    if width < 1 or height < 1:
        raise ValueError(f"PNG size must be positive, got {width}x{height}")
    target = _prepare(path)
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes(
                (
                    (x * 16 + seed * 37) % 256,
                    (y * 16 + seed * 59) % 256,
                    ((x + y) * 8 + seed * 97) % 256,
                )
            )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    target.write_bytes(
        _PNG_SIGNATURE
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )
    return target


def png_chunks(data: bytes) -> List[Tuple[bytes, bytes]]:
    """Split PNG bytes into ``(type, payload)`` chunks, checking every CRC.

    Raises ValueError for a wrong signature, a bad CRC, a truncated chunk or
    data after ``IEND``; lets tests check a PNG without an imaging library.
    """
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG: wrong signature")
    chunks: List[Tuple[bytes, bytes]] = []
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 12 > len(data):
            raise ValueError(f"truncated chunk at byte {pos}")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"truncated {kind!r} chunk at byte {pos}")
        payload = data[pos + 8 : end]
        (crc,) = struct.unpack(">I", data[end : end + 4])
        if crc != zlib.crc32(kind + payload) & 0xFFFFFFFF:
            raise ValueError(f"bad CRC in {kind!r} chunk at byte {pos}")
        chunks.append((kind, payload))
        pos = end + 4
        if kind == b"IEND" and pos != len(data):
            raise ValueError("data after IEND")
    if not chunks or chunks[0][0] != b"IHDR" or chunks[-1][0] != b"IEND":
        raise ValueError("a PNG starts with IHDR and ends with IEND")
    return chunks


# ---------------------------------------------------------------------------
# beamtimes, scans, list files
# ---------------------------------------------------------------------------


def beamtime_file_name(
    beamtime_id: str, prefix: str = "beamtime-metadata-", postfix: str = ".json"
) -> str:
    """``beamtime-metadata-<id>.json`` (or another prefix/postfix)."""
    return f"{prefix}{beamtime_id}{postfix}"


def make_beamtime(
    directory: PathLike,
    beamtime_id: str = "99001234",
    *,
    proposal_id: str = "99991173",
    beamline: str = "p00",
    core_path: Optional[PathLike] = None,
    proposal_type: str = "I",
    prefix: str = "beamtime-metadata-",
    postfix: str = ".json",
    **fields: Any,
) -> Path:
    """Write a beamtime metadata file in ``directory`` and return its path.

    All fields of the facility's file (:data:`BEAMTIME_TEMPLATE`); the ids,
    ``beamline`` (and ``beamlineAlias``, its upper case), ``proposalType``
    and ``corePath`` (default: ``directory`` itself, absolute) from the
    arguments.  ``fields`` override top-level keys; a value of None removes
    the key (e.g. ``corePath=None`` for the "core path missing" case).
    Written like the facility does: sorted keys, 4-space indent.
    """
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    data: Dict[str, Any] = json.loads(json.dumps(BEAMTIME_TEMPLATE))
    data.update(
        beamtimeId=str(beamtime_id),
        proposalId=str(proposal_id),
        beamline=beamline,
        beamlineAlias=beamline.upper(),
        proposalType=proposal_type,
        corePath=str(Path(core_path) if core_path is not None else base.resolve()),
    )
    for key, value in fields.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    target = base / beamtime_file_name(str(beamtime_id), prefix, postfix)
    target.write_text(json.dumps(data, indent=4, sort_keys=True) + "\n", encoding="utf-8")
    return target


def detector_file_paths(
    scan_dir: PathLike, name: str, detectors: Optional[Mapping[str, int]]
) -> List[Path]:
    """Where :func:`make_scan` puts detector files: ``<name>/<det>_NNNNN.raw``."""
    folder = Path(scan_dir) / name
    return [
        folder / f"{det}_{number:05d}.raw"
        for det, count in (detectors or {}).items()
        for number in range(count)
    ]


def make_scan(
    scan_dir: PathLike,
    name: str,
    *,
    kind: str = "nxs",
    detectors: Optional[Mapping[str, int]] = None,
    plot: bool = False,
    detector_bytes: int = 64,
    **kw: Any,
) -> Path:
    """Write one scan as a beamline leaves it and return its master file.

    ``<scan_dir>/<name>.nxs`` (``kind="nxs"``, also ``h5``/``nx``/``ndf``:
    :func:`write_nexus_scan`) or ``<name>.fio`` (:func:`write_fio_scan`),
    ``kw`` going to that writer; for each detector ``det: count`` the files
    ``<scan_dir>/<name>/<det>_00000.raw`` … (``detector_bytes`` bytes of
    deterministic content each); with ``plot`` the plot ``<name>.png``.
    """
    base = Path(scan_dir)
    if kind in ("nxs", "h5", "nx", "ndf"):
        master = write_nexus_scan(base / f"{name}.{kind}", **kw)
    elif kind == "fio":
        master = write_fio_scan(base / f"{name}.fio", **kw)
    else:
        raise ValueError(f"unknown scan kind {kind!r} (nxs, h5, nx, ndf or fio)")
    for path in detector_file_paths(base, name, detectors):
        path.parent.mkdir(parents=True, exist_ok=True)
        seed = zlib.crc32(path.name.encode())
        path.write_bytes(bytes((seed + i * 31) % 256 for i in range(detector_bytes)))
    if plot:
        write_png(base / f"{name}.png", seed=zlib.crc32(name.encode()) % 256)
    return master


def append_list_line(list_file: PathLike, record: str) -> None:
    """Append a dataset list record exactly as the sardana writers do.

    ``"\\n" + record`` in append mode, the file closed after each write: the
    file starts with an empty line and its last record has no newline, and
    every record ends with a close-after-write event for the watcher.
    """
    with open(list_file, "a", encoding="utf-8") as handle:
        handle.write("\n" + record)


# ---------------------------------------------------------------------------
# nxsfileinfo
# ---------------------------------------------------------------------------


def nxsfileinfo_executable() -> str:
    """The ``nxsfileinfo`` of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).parent / "nxsfileinfo"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nxsfileinfo")
    if found is None:
        raise FileNotFoundError(
            f"nxsfileinfo is neither beside {sys.executable} nor on PATH (install nxstools)"
        )
    return found


def run_nxsfileinfo(
    *args: str, cwd: Optional[PathLike] = None, timeout: float = 120.0
) -> "subprocess.CompletedProcess[str]":
    """Run ``nxsfileinfo *args`` without a shell; output captured as text.

    The exit status is not checked: callers assert on it (nxsfileinfo
    reports some failures only on stderr).
    """
    command = [nxsfileinfo_executable(), *[str(arg) for arg in args]]
    logger.debug("running %s", command)
    return subprocess.run(
        command,
        cwd=None if cwd is None else str(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
