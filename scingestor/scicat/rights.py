"""What the client has learnt about its account and backend, for its lifetime.

Rights the account lacks (deleting needs the backend's ``DELETE_GROUPS``)
are learnt once, by a cheap probe or from a first 403; whether the backend
has the v4 attachment route is detected once; conditions worth telling the
operator are kept as warnings, each said once.  All of it sits behind one
small lock of its own: a service reads these facts under its own lock while
the client's health observer takes that lock, so sharing the token lock
here would invert the lock order.
"""

from __future__ import annotations

import logging
import threading
from typing import Dict, List, Optional

from ..redact import protect_logger

logger = protect_logger(logging.getLogger(__name__))

#: where the backend says who may delete (for the operator's message)
DELETE_RIGHT_HINT = "the backend allows deleting only to members of one of its DELETE_GROUPS"


class LearntRights:
    """Rights (``"delete:origdatablocks"``, ``"delete:attachments"``), the v4
    attachment route and the operator's once-only warnings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rights: Dict[str, bool] = {}
        self._warnings: Dict[str, str] = {}
        self._v4_attachments: Optional[bool] = None

    def learn(self, right: str, allowed: bool) -> None:
        """Remember a right seen in an answer."""
        with self._lock:
            self._rights[right] = allowed

    def known(self, right: str) -> Optional[bool]:
        """The learnt value of *right*, ``None`` while unknown."""
        with self._lock:
            return self._rights.get(right)

    @property
    def v4_attachments(self) -> Optional[bool]:
        """Does the backend delete attachments by the v4 route? ``None``: not known yet."""
        with self._lock:
            return self._v4_attachments

    @v4_attachments.setter
    def v4_attachments(self, found: bool) -> None:
        with self._lock:
            self._v4_attachments = bool(found)

    def warn_once(self, key: str, text: str) -> bool:
        """Log *text* as a warning the first time *key* is seen; True then."""
        with self._lock:
            if key in self._warnings:
                return False
            self._warnings[key] = text
        logger.warning("%s", text)
        return True

    @property
    def warnings(self) -> List[str]:
        """Conditions the operator should know about, once each (oldest first)."""
        with self._lock:
            return list(self._warnings.values())
