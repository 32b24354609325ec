"""The preflight check of a site: what may this SciCat account really do?

``scicat_dataset_ingest -c CONFIG --check`` runs it once before going live.
With the site's configuration (URL, routes, credentials, pid prefix) it
logs in and tries, on a throw-away dataset, everything the ingestion does:
create a dataset with a pid of its own, update it, post an origdatablock
and an attachment, read a proposal, delete the block and the attachment
(what re-ingesting a changed scan needs), then removes the dataset.

Rights live in the backend's environment (``CREATE_DATASET_WITH_PID_GROUPS``,
``CREATE_DATASET_PRIVILEGED_GROUPS``, ``ADMIN_GROUPS``, ``PROPOSAL_GROUPS``,
``DELETE_GROUPS``); a site admin reads them from the table, where each row
gives the status code and the server's message and names the setting an
account lacks.  Whatever could not be removed is listed by pid and id, so
the site can delete it by hand.

Why try instead of asking: the backend has no route that tells an
account's rights, and ``auth/whoami`` lists groups, not what the site
grants them.  The backend's release is not published either: the check
shows what answers (health, the OpenAPI title and version, headers).

The package's rooms: :mod:`.report` (the rows, the verdict, the printed
table), :mod:`.account` (reach, backend, log in, whoami), :mod:`.proposals`,
:mod:`.dataset` (the throw-away dataset and the writes tried on it),
:mod:`.cleanup` (the deletes, read back, and how to remove what stays);
this module puts them in order.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from typing import Optional

from ..config import IngestorConfig
from ..errors import ScingestorError
from ..redact import redact
from ..scicat import ClientSettings, SciCatClient
from . import account, cleanup
from .dataset import PREFLIGHT_PID_STEM, ThrowAwayDataset
from .proposals import read_proposals
from .report import NO, UNKNOWN, YES, PreflightReport, Row

#: the check asks few times: an operator waits at the terminal
PREFLIGHT_MAX_TRIES = 3
PREFLIGHT_TIMEOUT = 15.0

__all__ = [
    "NO",
    "PREFLIGHT_MAX_TRIES",
    "PREFLIGHT_PID_STEM",
    "PREFLIGHT_TIMEOUT",
    "Preflight",
    "PreflightReport",
    "Row",
    "UNKNOWN",
    "YES",
    "run_check",
]


def _client_for(config: IngestorConfig) -> SciCatClient:
    """A client of the check's own: few tries and a short timeout."""
    settings = dataclasses.replace(
        ClientSettings.from_config(config),
        max_tries=min(PREFLIGHT_MAX_TRIES, max(1, config.max_request_tries_number)),
        timeout=min(PREFLIGHT_TIMEOUT, float(config.request_timeout or PREFLIGHT_TIMEOUT)),
    )
    return SciCatClient(settings)


class Preflight:
    """Runs the checks in order; each step records its row and never raises."""

    def __init__(
        self,
        config: IngestorConfig,
        client: Optional[SciCatClient] = None,
        host: Optional[str] = None,
        now: Optional[float] = None,
    ) -> None:
        self.config = config
        self._own_client = client is None
        self.client = client if client is not None else _client_for(config)
        self.host = host or socket.gethostname()
        self.stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        self.report = PreflightReport(self.client.url, self.client.account_name)
        #: the run's test dataset, once the checks got that far
        self.dataset: Optional[ThrowAwayDataset] = None

    def run(self) -> PreflightReport:
        """Every check in order; a step the rest depends on stops the run when it fails."""
        try:
            if account.reach(self.client, self.report):
                account.backend(self.client, self.report)
                if account.login(self.client, self.report):
                    account.whoami(self.client, self.report)
                    read_proposals(self.config, self.client, self.report)
                    self._work_on_dataset()
        except ScingestorError as exc:  # e.g. a credential file gone meanwhile
            self.report.fatal = f"the check stopped: {redact(str(exc))}"
        finally:
            if self._own_client:
                self.client.close()
        return self.report

    def _work_on_dataset(self) -> None:
        """Make, change and remove the throw-away dataset, as a scan's ingestion would."""
        trial = ThrowAwayDataset.named(self.config, self.client, self.report, self.host, self.stamp)
        self.dataset = trial
        if not trial.create():
            trial.not_tried()
            return
        trial.patch()
        trial.post_block()
        trial.post_attachment()
        cleanup.delete_attachment(trial)
        cleanup.delete_block(trial)
        cleanup.delete_dataset(trial)


def run_check(
    config: IngestorConfig, client: Optional[SciCatClient] = None, host: Optional[str] = None
) -> PreflightReport:
    """Run the preflight check with *config* (a client of its own unless given)."""
    return Preflight(config, client, host=host).run()
