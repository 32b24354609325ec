"""Settings of the SciCat client, named after the YAML configuration variables."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Dict, Optional, Union

logger = logging.getLogger(__name__)

DEFAULT_URL = "http://localhost:3000/api/v3"
# read-only: every client takes its own copy (the original shared one mutable dict)
DEFAULT_HEADERS: Mapping[str, str] = MappingProxyType(
    {"Content-Type": "application/json", "Accept": "application/json"}
)
#: The backend refuses (with a 500) any body of 16 MiB or more.
MAX_BODY_BYTES = 16 * 1024 * 1024


def _default_headers() -> Dict[str, str]:
    return dict(DEFAULT_HEADERS)


@dataclass
class ClientSettings:
    """How to reach SciCat: base URL, routes, credentials, retries, TLS.

    ``max_tries`` is the total number of attempts per request (the
    ``max_request_tries_number`` variable); waits grow from ``backoff_base``
    doubling up to ``backoff_max`` seconds, with jitter.
    ``max_failing_answers`` bounds the tries SciCat answers with a 5xx or
    with something it never sends: then :class:`~scingestor.errors.SciCatFailing`
    is raised and the queue retries the scan later (with the defaults about
    one minute of tries, not the half hour of ``max_tries``).
    """

    url: str = DEFAULT_URL
    login_path: str = "Users/login"
    credential_file: Optional[str] = None
    username: str = "ingestor"
    headers: Dict[str, str] = field(default_factory=_default_headers)
    max_tries: int = 100
    max_failing_answers: int = 10
    timeout: float = 30.0
    verify: Union[bool, str] = True
    backoff_base: float = 0.2
    backoff_max: float = 30.0
    datasets_path: str = "Datasets"
    datablocks_path: str = "OrigDatablocks"
    attachments_path: str = "Datasets/{pid}/Attachments"
    proposals_path: str = "Proposals"

    def __post_init__(self) -> None:
        self.url = str(self.url).strip().rstrip("/")
        # a private copy: a caller's (or the defaults') dict is never shared
        self.headers = {str(k): str(v) for k, v in dict(self.headers or {}).items()}
        self.max_tries = max(1, int(self.max_tries))
        self.max_failing_answers = max(1, int(self.max_failing_answers))
        self.timeout = float(self.timeout)
        self.backoff_base = max(0.0, float(self.backoff_base))
        self.backoff_max = max(self.backoff_base, float(self.backoff_max))
        for name in (
            "login_path",
            "datasets_path",
            "datablocks_path",
            "attachments_path",
            "proposals_path",
        ):
            setattr(self, name, str(getattr(self, name)).strip().strip("/"))

    @classmethod
    def from_config(cls, cfg: Any) -> "ClientSettings":
        """Build settings from a configuration object (attributes) or a mapping.

        Reads the variables ``scicat_url``, ``scicat_users_login_path``,
        ``ingestor_credential_file``, ``ingestor_username``,
        ``request_headers``, ``max_request_tries_number``,
        ``request_timeout``, ``scicat_tls_verify``, ``scicat_ca_bundle`` (a
        bundle path wins over the flag), ``scicat_datasets_path``,
        ``scicat_datablocks_path``, ``scicat_attachments_path`` and
        ``scicat_proposals_path``; missing or ``None`` ones keep the defaults.
        """
        defaults = cls()

        def get(name: str, default: Any) -> Any:
            if isinstance(cfg, Mapping):
                value = cfg.get(name, default)
            else:
                value = getattr(cfg, name, default)
            return default if value is None else value

        verify: Union[bool, str] = bool(get("scicat_tls_verify", True))
        bundle = get("scicat_ca_bundle", None)
        if bundle:
            verify = str(bundle)
        headers = get("request_headers", None)
        if headers is not None and not isinstance(headers, Mapping):
            logger.warning(
                "request_headers is not a mapping (%r): default headers kept",
                type(headers).__name__,
            )
            headers = None
        credential_file = get("ingestor_credential_file", None)
        return cls(
            url=str(get("scicat_url", defaults.url)),
            login_path=str(get("scicat_users_login_path", defaults.login_path)),
            credential_file=str(credential_file) if credential_file else None,
            username=str(get("ingestor_username", defaults.username)),
            headers=dict(headers) if headers is not None else _default_headers(),
            max_tries=int(get("max_request_tries_number", defaults.max_tries)),
            timeout=float(get("request_timeout", defaults.timeout)),
            verify=verify,
            datasets_path=str(get("scicat_datasets_path", defaults.datasets_path)),
            datablocks_path=str(get("scicat_datablocks_path", defaults.datablocks_path)),
            attachments_path=str(get("scicat_attachments_path", defaults.attachments_path)),
            proposals_path=str(get("scicat_proposals_path", defaults.proposals_path)),
        )
