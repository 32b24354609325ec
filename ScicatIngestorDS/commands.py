"""How the device declares its commands: one way in, one body per action.

Every command runs the same way: the service (or a clear failure when a
configuration fault left none), then the command's body; whatever the body
raises becomes a one-line ``DevFailed`` and ``LastError``.  That path lives
once, in :func:`service_command`, so a command is only its Tango signature
and what it asks of the service.

A measurement command and its ``…In`` twin (sardana gives the scan
directory explicitly) share one body: :func:`in_scan_dir` declares the twin
from the plain command, so the two can never drift apart.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from tango.server import command

from scingestor.errors import ScingestorError

#: a command body: ``body(device, service, *arguments, scan_dir=...)``
Body = Callable[..., Any]
#: turns a command's Tango argument into the body's (positional, keyword) arguments
Unpack = Callable[[Tuple[Any, ...]], Tuple[Sequence[Any], Dict[str, Any]]]


class ArgumentError(ScingestorError):
    """A command's array argument does not hold the values it needs."""


def _as_given(argin: Tuple[Any, ...]) -> Tuple[Sequence[Any], Dict[str, Any]]:
    return argin, {}


def _declare(name: str, body: Body, unpack: Unpack, doc: Optional[str], options: Any) -> Any:
    """A Tango command ``name`` running ``body`` through the device's one way in.

    The command method is built with ``*argin`` (not ``functools.wraps``):
    pytango reads the types from ``options`` and must not see the body's
    ``service`` parameter as the command's argument.
    """

    def run(device: Any, *argin: Any) -> Any:
        def action(service: Any) -> Any:
            args, kwargs = unpack(argin)
            return body(device, service, *args, **kwargs)

        return device.run_command(name, action)

    run.__name__ = run.__qualname__ = name
    run.__doc__ = doc
    run.__annotations__ = {}  # the types are the options' (pytango reads hints too)
    declared = command(run, **options)
    declared.body = body
    return declared


def service_command(**options: Any) -> Callable[[Body], Any]:
    """Declare a command (``options`` as for ``tango.server.command``) from its body."""

    def declare(body: Body) -> Any:
        return _declare(body.__name__, body, _as_given, body.__doc__, options)

    return declare


def in_scan_dir(plain: Any, name: str, value: Optional[str] = None, **options: Any) -> Any:
    """The ``…In`` twin of a measurement command: the same body, on a given scan directory.

    Without ``value`` the twin takes the scan directory alone; with it, a
    pair ``[value, scan directory]`` (``value`` names the first for the error
    text).  An empty scan directory means the latest list file, as the plain
    command does.
    """

    def unpack(argin: Tuple[Any, ...]) -> Tuple[Sequence[Any], Dict[str, Any]]:
        if value is None:
            return (), {"scan_dir": argin[0]}
        pair = argin[0]
        if len(pair) != 2:
            raise ArgumentError(f"expected [{value}, scan directory], got {len(pair)} value(s)")
        return (pair[0],), {"scan_dir": pair[1]}

    doc = f"{name}: as {plain.__name__}, in the list file of the given scan directory."
    return _declare(name, plain.body, unpack, doc, options)


def scan_dir_or_latest(scan_dir: str) -> Optional[str]:
    """A command's scan directory argument; '' (or blanks) is the latest list file."""
    return scan_dir.strip() or None
