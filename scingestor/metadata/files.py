"""Metadata files on disk: whole or cut, written in one rename, a generator's output redirected.

A generator (``nxsfileinfo`` or a site's own) writes its output in place,
so a full disk or a kill leaves a cut file; these helpers let the pipeline
tell a whole file from a cut one and have every file appear whole or not at
all.  Split from :mod:`scingestor.pipeline` (issue 19).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from typing import Any, Iterator, List, Optional, Sequence

from .. import leftovers


def usable(path: str) -> bool:
    """Does a metadata file exist whole (not left cut by a failed or killed generator)?

    ``nxsfileinfo`` writes its output in place: a full disk or a kill leaves
    an empty or cut file, which must be generated again, not posted.  A
    JSON object or list ends with ``}`` or ``]`` (only the tail is read).
    """
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 64))
            tail = handle.read().rstrip()
    except OSError:
        return False
    return tail[-1:] in (b"}", b"]")


def discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:  # gone already, or a read-only disk: the retry tells
        pass


@contextlib.contextmanager
def written_whole(path: str) -> Iterator[str]:
    """Where to write *path* anew; it replaces *path* in one rename when the block ends well.

    The file written has *path*'s own name (a site's generator may read
    something from its output's name), in a new hidden directory beside
    *path* (a rename within one file system): the origdatablock generator,
    which lists the files and directories whose names start with a scan's
    name, never takes it for one of a scan's files.  Whatever the block
    leaves behind (a failed command's half file) is removed with the directory.
    """
    directory = tempfile.mkdtemp(
        prefix=leftovers.prefix(leftovers.PART), dir=os.path.dirname(path) or "."
    )
    temporary = os.path.join(directory, os.path.basename(path))
    try:
        yield temporary
        if os.path.exists(temporary):
            os.replace(temporary, path)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def restored_on_failure(paths: Sequence[str]) -> Iterator[None]:
    """Put *paths* back as they were when the block fails.

    The measurement callback (``nxsfileinfo groupmetadata``) rewrites the
    measurement's files in place (they name each other, so they cannot be
    redirected): a full disk mid-write left a measurement JSON without its
    pid, and every later scan merged into the broken file (campaign seed
    3048).  The files are copied aside first (a copy that fails is an
    OSError before anything changed); on failure the copies are renamed
    back (a rename needs no space) and files the block created are removed.
    """
    if not paths:  # no measurement: nothing to keep
        yield
        return
    directory = os.path.dirname(paths[0])
    aside = tempfile.mkdtemp(prefix=leftovers.prefix(leftovers.PART), dir=directory or ".")
    try:
        kept = {}
        for index, path in enumerate(paths):
            if os.path.exists(path):
                kept[path] = os.path.join(aside, str(index))
                shutil.copy2(path, kept[path])
        try:
            yield
        except BaseException:
            for path in paths:
                if path in kept:
                    os.replace(kept[path], path)
                else:
                    discard(path)
            raise
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def names_output(argv: Sequence[str], output: str) -> bool:
    """Does an argument name *output* (``path`` or ``--option=path``)?"""
    return redirect(argv, output, "") != list(argv)


def redirect(argv: Sequence[str], output: str, temporary: str) -> List[str]:
    """*argv* with each argument naming *output* naming *temporary* instead."""
    target = os.path.normpath(output)
    result: List[str] = []
    for argument in argv:
        head, equals, tail = argument.rpartition("=")
        if os.path.normpath(argument) == target:
            result.append(temporary)
        elif equals and tail and os.path.normpath(tail) == target:
            result.append(head + equals + temporary)
        else:
            result.append(argument)
    return result


def write_json(path: str, content: Any, mode: Optional[int]) -> None:
    """Replace a metadata file atomically (readers never see half a file).

    Written with the mode a generator would give it: the umask's, or *mode*.
    """
    with written_whole(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(content, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
