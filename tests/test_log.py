"""Logging: the operators' line format, rotation and secret redaction."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from scingestor.log import redact, register_secret, rotate_log_file, setup_logging


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    setup_logging("warning")


def test_plain_format_and_redaction(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    setup_logging("debug", str(log))
    secret = "eyJhbGciOi.secret-token.value"
    register_secret(secret)
    logger = logging.getLogger("scingestor.test")
    logger.info("token is %s", secret)
    try:
        raise RuntimeError(f"failed with Authorization: Bearer {secret}")
    except RuntimeError:
        logger.exception("request failed")
    text = log.read_text()
    assert secret not in text
    assert "INFO : token is ***" in text
    assert "Bearer ***" in text
    assert redact(f"x {secret} y") == "x *** y"


def test_short_secrets_are_not_redacted() -> None:
    register_secret("ab")
    assert redact("abc") == "abc"


def test_rotation_keeps_five(tmp_path: Path) -> None:
    log = tmp_path / "r.log"
    for index in range(8):
        log.write_text(f"run {index}\n")
        rotate_log_file(str(log))
    assert not log.exists()
    assert (tmp_path / "r.log.1").read_text() == "run 7\n"
    assert (tmp_path / "r.log.5").read_text() == "run 3\n"
    assert not (tmp_path / "r.log.6").exists()


def test_timestamps_format(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    setup_logging("info", str(log), timestamps=True)
    logging.getLogger("scingestor.test").warning("hello")
    line = log.read_text().strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} : WARNING : hello", line)


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        setup_logging("chatty")
