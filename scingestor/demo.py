"""``scingestor-demo``: the ingestor on an embedded default, no external services.

Starts the SciCat-compatible server on loopback, writes a configuration and
a credential file into a scratch directory, and runs the real console
scripts against it: ``--print-config`` to show the effective
configuration, then ``scicat_ingest`` with a sample and an instrument.  It
prints what the server stored, so a newcomer sees the whole round trip.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional, Sequence

from .cli import model_ingest
from .testing.scicat_server import DEFAULT_ACCOUNTS, SciCatServer

SAMPLE = {
    "sampleId": "demo-sample-0001",
    "owner": "Jane Doe",
    "description": "Lysozyme crystal, demo sample",
    "ownerGroup": "ingestor",
    "accessGroups": ["99001234-dmgt"],
    "sampleCharacteristics": {"temperature": {"value": 100, "unit": "K"}},
}
INSTRUMENT = {
    "uniqueName": "P00-demo",
    "name": "Demo beamline P00",
    "customMetadata": {"facility": "DEMO"},
}


def write_demo_files(workdir: Path, url: str) -> Path:
    """Configuration, credential file and sample records for the demo."""
    account = DEFAULT_ACCOUNTS[0]
    credential = workdir / "scingestor-credentials.json"
    credential.write_text(json.dumps({"username": account.username,
                                      "password": account.password}))
    credential.chmod(0o600)
    config = workdir / "scingestor.yaml"
    config.write_text(
        f"scicat_url: {url}\n"
        f"ingestor_credential_file: {credential}\n"
        "scicat_users_login_path: auth/login\n"
        f"beamtime_dirs:\n  - {workdir / 'gpfs' / 'current'}\n"
        f"ingestor_var_dir: {workdir / 'var'}\n")
    (workdir / "sample.json").write_text(json.dumps(SAMPLE, indent=2))
    return config


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scingestor-demo",
        description="Run the ingestor against an embedded SciCat-compatible server.")
    parser.add_argument("--serve", type=float, default=0.0, metavar="SECONDS",
                        help="keep the server running SECONDS after the demo (to poke at it)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="scingestor-demo-") as tmp, \
            SciCatServer() as server:
        workdir = Path(tmp)
        print(f"SciCat-compatible server on {server.url}")
        config = write_demo_files(workdir, server.url)
        print(f"\n$ scicat_dataset_ingestor -c {config} --print-config   (excerpt)")
        from .config import load_config
        effective = load_config(str(config)).to_yaml().splitlines()
        wanted = ("scicat_url", "ingestor_credential_file", "scicat_users_login_path",
                  "beamtime_filename_prefix", "beamtime_filename_postfix",
                  "datasets_filename_pattern", "ingested_datasets_filename_pattern",
                  "dataset_update_strategy")
        for line in effective:
            if line.split(":", 1)[0] in wanted:
                print("  " + line)
        instrument = workdir / "instrument.json"
        instrument.write_text(json.dumps(INSTRUMENT))
        admin = DEFAULT_ACCOUNTS[1]
        admin_credential = workdir / "admin-credentials.json"
        admin_credential.write_text(json.dumps({"username": admin.username,
                                                "password": admin.password}))
        admin_credential.chmod(0o600)
        admin_config = workdir / "admin.yaml"
        admin_config.write_text(config.read_text().replace(
            str(workdir / "scingestor-credentials.json"), str(admin_credential)))

        print(f"\n$ scicat_ingest -m Samples -c {config} {workdir / 'sample.json'}")
        code = model_ingest.main(["-m", "Samples", "-c", str(config),
                                  str(workdir / "sample.json")])
        print(f"$ scicat_ingest -m Instruments -c {admin_config} {instrument}")
        code = model_ingest.main(["-m", "Instruments", "-c", str(admin_config),
                                  str(instrument)]) or code
        print("\nStored in SciCat:")
        for sample in server.samples.values():
            print(f"  sample {sample['sampleId']}: {sample.get('description', '')}")
        for pid, item in server.instruments.items():
            print(f"  instrument {pid}: {item.get('name', '')}")
        print(f"\nRequests the server answered: {len(server.recorded())}")
        for request in server.recorded():
            print(f"  {request.method} {request.path} -> {request.status}")
        if args.serve > 0:
            print(f"\nServing {server.url} for {args.serve:g} s (Ctrl-C to stop)")
            try:
                time.sleep(args.serve)
            except KeyboardInterrupt:
                pass
    sys.stdout.flush()
    return code


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
