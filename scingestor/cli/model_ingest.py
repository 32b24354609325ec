"""``scicat_ingest``: post JSON files to a SciCat model (Samples, Instruments, …).

Used by hand for what the beamline ingestor does not produce itself.  Each
file is checked to be JSON before anything is sent; a file holding a JSON
list posts each of its records.  Every failed file gets one line naming the
file and the reason, and the exit code is non-zero when any file failed.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Any, List, Optional, Sequence

from ..config import IngestorConfig
from ..errors import ConflictError, CredentialError, SciCatError, ScingestorError
from ..scicat import ClientSettings, SciCatClient, load_credentials
from .common import EXIT_FAILURE, EXIT_OK, base_parser, run_script

logger = logging.getLogger("scingestor.cli.model_ingest")

DESCRIPTION = """\
Post SciCat model records from JSON files, e.g.

  scicat_ingest -m Samples -c ~/.scingestor.yaml ./sample.json

The model is the plural REST collection of the SciCat API v3: Samples,
Instruments, Proposals, Datasets (RawDatasets and DerivedDatasets are
posted to Datasets with their type).  Login as for the dataset ingestor
(ingestor_credential_file), or with a token file given by -p.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = base_parser("scicat_ingest", DESCRIPTION)
    parser.add_argument(
        "-m",
        "--model",
        dest="model",
        metavar="MODEL",
        help="SciCat model, e.g. Samples, Instruments, Proposals, Datasets",
    )
    parser.add_argument(
        "-p",
        "--token-file",
        dest="token_file",
        metavar="FILE",
        help="file holding a SciCat access token (used instead of a login)",
    )
    parser.add_argument(
        "files",
        nargs="*",
        metavar="metadata_json_file",
        help="JSON file(s) with the record(s) to post",
    )
    return parser


def read_records(path: str) -> List[Any]:
    """The records of one JSON file: an object, or each item of a list."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise ScingestorError(f"{path}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise ScingestorError(f"{path}: not UTF-8 text ({error.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ScingestorError(
            f"{path}:{error.lineno}:{error.colno}: not valid JSON: {error.msg}"
        ) from None
    records = data if isinstance(data, list) else [data]
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            where = f"{path}" if not isinstance(data, list) else f"{path} item {index}"
            raise ScingestorError(
                f"{where}: a record must be a JSON object, not {type(record).__name__}"
            )
    return records


def ingest(args: argparse.Namespace, config: IngestorConfig) -> int:
    if not args.model:
        logger.error("SciCat model not defined. Use the -m or --model option")
        return EXIT_FAILURE
    if not args.files:
        logger.error("No metadata JSON file given")
        return EXIT_FAILURE
    if args.token_file:
        credentials = load_credentials(args.token_file, plain_text="token")
    elif config.ingestor_credential_file:
        credentials = load_credentials(
            config.ingestor_credential_file, username=config.ingestor_username
        )
    else:
        raise CredentialError(
            "no credentials: set ingestor_credential_file in the "
            "configuration or give a token file with -p"
        )
    failed = 0
    posted = 0
    already = 0
    with SciCatClient(ClientSettings.from_config(config), credentials=credentials) as client:
        for path in args.files:
            try:
                records = read_records(path)
            except ScingestorError as error:
                logger.error("ModelIngestor: %s", error)
                failed += 1
                continue
            for index, record in enumerate(records):
                where = path if len(records) == 1 else f"{path} item {index}"
                logger.info("ModelIngestor: Post the %s from %s", args.model, where)
                try:
                    client.post_model(args.model, record)
                    posted += 1
                except ConflictError as error:
                    # the record is there (a 409, or the backend's 500 for a known
                    # sampleId that a look-up confirmed): the goal holds, nothing
                    # is changed; re-running a model ingestion is no failure
                    logger.warning(
                        "ModelIngestor: %s: already in SciCat, left unchanged (%s)",
                        where,
                        describe(error),
                    )
                    already += 1
                except SciCatError as error:
                    logger.error("ModelIngestor: %s: %s", where, describe(error))
                    failed += 1
    logger.info(
        "ModelIngestor: %d record(s) posted, %d already there, %d failed", posted, already, failed
    )
    return EXIT_FAILURE if failed else EXIT_OK


def describe(error: SciCatError) -> str:
    """One line for a failed post: status and the backend's own messages."""
    text = str(error)
    if error.messages:
        text += " (" + "; ".join(str(m) for m in error.messages) + ")"
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_script(build_parser(), ingest, argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
