"""pytango's bundled Tango database server, run on SQLite for the demo and tests.

One place for its command line, so the demo and the tests that start a real
Tango database (device and macro tests) start it the same way.
"""

from __future__ import annotations

import sys
from typing import List

#: the instance name the bundled server registers itself under
INSTANCE = "2"


def database_argv(port: int, host: str = "127.0.0.1") -> List[str]:
    """The argument vector of a SQLite-backed Tango database on *host*:*port*.

    It writes its ``tango_database.db`` in the working directory it is
    started in, so each caller gives it a folder of its own.
    """
    return [
        sys.executable,
        "-m",
        "tango.databaseds.database",
        "--db_access",
        "sqlite3",
        "--host",
        host,
        "--port",
        str(port),
        INSTANCE,
    ]
