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

from .commands import GeneratorError, display

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


class CommandRunner:
    """Runs generator commands as child processes."""

    def __init__(self, execute: bool = True, log_commands: bool = False,
                 timeout: Optional[float] = 900.0) -> None:
        self.execute = execute
        self.log_commands = log_commands
        self.timeout = timeout

    def run(self, argv: Sequence[str], what: str = "generator",
            cwd: Optional[str] = None) -> CommandResult:
        """Run *argv*; :class:`GeneratorError` on a non-zero exit or a failure to start."""
        argv = list(argv)
        if not argv:
            raise GeneratorError(f"{what}: empty command")
        if self.log_commands or not self.execute:
            logger.info("%s: %s%s", what, display(argv),
                        "" if self.execute else " (not executed: execute_commands is false)")
        if not self.execute:
            return CommandResult(argv, 0, "", "", 0.0, executed=False)
        program = [resolve_program(argv[0]), *argv[1:]]
        start = time.monotonic()
        try:
            completed = subprocess.run(program, stdin=subprocess.DEVNULL,
                                       capture_output=True, cwd=cwd, timeout=self.timeout,
                                       check=False)
        except FileNotFoundError:
            raise GeneratorError(f"{what}: program '{argv[0]}' not found", argv) from None
        except PermissionError:
            raise GeneratorError(f"{what}: program '{argv[0]}' is not executable",
                                 argv) from None
        except subprocess.TimeoutExpired:
            raise GeneratorError(f"{what}: no answer within {self.timeout:g} s: "
                                 f"{display(argv)}", argv) from None
        seconds = time.monotonic() - start
        stdout = completed.stdout.decode("utf-8", errors="replace")
        stderr = completed.stderr.decode("utf-8", errors="replace")
        if completed.returncode != 0:
            tail = stderr.strip()[-STDERR_TAIL:]
            raise GeneratorError(
                f"{what} failed with exit code {completed.returncode}: {display(argv)}"
                + (f"\n{tail}" if tail else ""), argv, completed.returncode, stderr)
        logger.debug("%s took %.3f s: %s", what, seconds, display(argv))
        return CommandResult(argv, completed.returncode, stdout, stderr, seconds)
