"""Running generator commands: argument vectors, never a shell.

A failing command is reported with its exit code and the tail of its
stderr, so the operator sees *why* ``nxsfileinfo`` refused a file.  With
``execute_commands: false`` commands are logged and not run: the ingestor
then only posts metadata files that something else has written.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Optional, Sequence

from ..errors import GeneratorError
from . import nxstools_fix, text_fix
from .commands import display
from .inprocess import InProcessRunner, handles

logger = logging.getLogger(__name__)

STDERR_TAIL = 2000


@dataclass(frozen=True)
class CommandResult:
    argv: List[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    executed: bool = True


def resolve_program(name: str) -> str:
    """Find *name* on PATH, else beside the running interpreter.

    Console scripts such as ``nxsfileinfo`` live in the virtualenv's
    ``bin`` directory, which is not on PATH when the ingestor is started
    as ``.venv/bin/scicat_dataset_ingestor`` by a service manager.
    """
    if os.sep in name:
        return name
    found = shutil.which(name)
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    return name


def subprocess_argv(argv: Sequence[str]) -> List[str]:
    """What to start for *argv*: the program found, or nxsfileinfo with the nxstools fix.

    ``nxsfileinfo`` of this installation (the bare name, or the script
    beside this interpreter) runs as ``python -m
    scingestor.metadata.nxstools_fix`` with the same arguments, the way the
    warm workers run it (see :mod:`scingestor.metadata.nxstools_fix`).  An
    ``nxsfileinfo`` given by a path to another installation runs as given.
    """
    program = resolve_program(argv[0])
    if handles(argv) and (
        os.sep not in argv[0]
        or _same_file(
            program, os.path.join(os.path.dirname(sys.executable), os.path.basename(argv[0]))
        )
    ):
        return nxstools_fix.command(argv)
    return [program, *argv[1:]]


def _same_file(one: str, other: str) -> bool:
    try:
        return os.path.samefile(one, other)
    except OSError:
        return False


def reason(stderr: str) -> str:
    """Why a generator failed, in one line, from what it printed on stderr.

    nxsfileinfo prints its message (``nxsfileinfo: File 'x' cannot be
    opened``) and then its whole help text; a crash ends with the exception
    line of a traceback; other programs print what they print.  The line
    that says why is kept; the rest is in the debug log.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(text_fix.MARK)]
    if not lines:
        return "no message"
    if any(line.startswith("Traceback ") for line in lines):
        chosen = lines[-1]
    else:
        own = [line for line in lines if line.startswith(("nxsfileinfo: ", "Error: "))]
        chosen = (
            own[-1]
            if own
            else next((line for line in lines if not line.lower().startswith("usage:")), lines[0])
        )
    return chosen[:STDERR_TAIL]


class CommandRunner:
    """Runs generator commands: ``nxsfileinfo`` in warm workers, others as processes."""

    def __init__(
        self,
        execute: bool = True,
        log_commands: bool = False,
        timeout: Optional[float] = 900.0,
        in_process: bool = True,
        workers: int = 2,
    ) -> None:
        self.execute = execute
        self.log_commands = log_commands
        self.timeout = timeout
        self.in_process = InProcessRunner(workers) if in_process else None

    def prepare(self) -> None:
        """Start the warm workers now (in the background), not at the first scan."""
        if self.in_process is not None and self.execute:
            self.in_process.start()

    def close(self) -> None:
        """Stop the warm workers (they are started again when needed)."""
        if self.in_process is not None:
            self.in_process.close()

    def run(
        self, argv: Sequence[str], what: str = "generator", cwd: Optional[str] = None
    ) -> CommandResult:
        """Run *argv*; :class:`GeneratorError` on a non-zero exit or a failure to start."""
        argv = list(argv)
        if not argv:
            raise GeneratorError(f"{what}: empty command")
        if self.log_commands or not self.execute:
            logger.info(
                "%s: %s%s",
                what,
                display(argv),
                "" if self.execute else " (not executed: execute_commands is false)",
            )
        if not self.execute:
            return CommandResult(argv, 0, "", "", 0.0, executed=False)
        start = time.monotonic()
        if self.in_process is not None and handles(argv):
            try:
                code, stdout, stderr = self.in_process.run(argv, self.timeout)
            except Exception as error:  # the pool is broken: the subprocess still works
                logger.warning(
                    "%s: in-process run failed (%s); running it as a process", what, error
                )
            else:
                return self._result(argv, what, code, stdout, stderr, time.monotonic() - start)
        program = subprocess_argv(argv)
        try:
            completed = subprocess.run(
                program,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=cwd,
                timeout=self.timeout,
                check=False,
            )
        except FileNotFoundError:
            raise GeneratorError(f"{what}: program '{argv[0]}' not found", argv) from None
        except PermissionError:
            raise GeneratorError(f"{what}: program '{argv[0]}' is not executable", argv) from None
        except subprocess.TimeoutExpired:
            raise GeneratorError(
                f"{what}: no answer within {self.timeout:g} s: {display(argv)}", argv
            ) from None
        return self._result(
            argv,
            what,
            completed.returncode,
            completed.stdout.decode("utf-8", errors="replace"),
            completed.stderr.decode("utf-8", errors="replace"),
            time.monotonic() - start,
        )

    @staticmethod
    def _result(
        argv: List[str], what: str, code: int, stdout: str, stderr: str, seconds: float
    ) -> CommandResult:
        if code != 0:
            # one line: the reason, not the command line (logged at debug level) and
            # the help text nxsfileinfo prints after it
            logger.debug("%s failed with exit code %s: %s", what, code, display(argv))
            raise GeneratorError(
                f"{what} failed with exit code {code}: {reason(stderr)}",
                argv,
                code,
                stderr,
            )
        for line in stderr.splitlines():
            # what the generator kept on our behalf (text_fix): one line, scan and file named
            if line.startswith(text_fix.MARK):
                logger.warning("%s: %s", what, line[len(text_fix.MARK) :])
        logger.debug("%s took %.3f s: %s", what, seconds, display(argv))
        return CommandResult(argv, code, stdout, stderr, seconds)
