"""The seeded fault campaign of issue 18: randomised schedules on a real daemon.

A schedule (:mod:`.schedule`) is a pure function of its seed: which scans
exist, what is written to the list file and which faults hit SciCat, the
daemon, the disk and the beamtime directory, in which order.  The runner
(:mod:`.runner`) plays it against a real ``scicat_dataset_ingestor``
process, batch runs and the test server; the checks (:mod:`.invariants`)
judge the final SciCat state and the ingested list.  See docs/campaign.md.
"""
