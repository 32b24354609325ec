"""Removing the throw-away dataset again: the deletes a changed scan needs, read back.

Re-ingesting a changed scan deletes its old origdatablocks and
attachments, so these deletes are checks in their own right; removing the
dataset itself is not needed by the ingestion (its row says so).  Every
delete is read back, since a backend may answer 200 and keep the record.
Whatever stays is recorded with the request that removes it by hand.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..errors import ForbiddenError, NotFoundError, SciCatError
from ..scicat import encode_segment
from .dataset import ThrowAwayDataset
from .report import NO, UNKNOWN, YES, PreflightReport, answer

_DELETE_HINT = "the account is not in the backend's DELETE_GROUPS; ADMIN_GROUPS is not enough"
_ATTACHMENT_HINT = "the backend deletes attachments for ADMIN_GROUPS or DELETE_GROUPS members"


def _delete(
    report: PreflightReport,
    check: str,
    needed: bool,
    delete: Callable[[], Any],
    still_there: Callable[[], Optional[bool]],
    item: str,
    hint: str,
    right: str,
) -> bool:
    """Try a delete, then read back whether *item* is gone."""
    try:
        delete()
    except ForbiddenError as exc:
        report.add(check, NO, f"{answer(exc)} ({hint})", needed, right)
        return False
    except NotFoundError as exc:
        report.add(check, UNKNOWN, answer(exc), needed)
        return False
    except SciCatError as exc:
        report.add(check, NO, answer(exc), needed)
        return False
    try:
        held = still_there()
    except SciCatError as exc:
        held = None
        reason = answer(exc)
    else:
        reason = "cannot be read back"
    if held:
        report.add(check, NO, f"answered 200 but {item} is still there", needed)
        return False
    report.made[item] = True
    gone = "gone" if held is False else f"answered 200; {reason}"
    report.add(check, YES, f"200: {gone}", needed)
    return True


def delete_attachment(trial: ThrowAwayDataset) -> None:
    """Delete the thumbnail; the row names the route (v4 by id, or v3) that did it."""
    check, needed = "delete the attachment", trial.attachments_needed
    client, report = trial.client, trial.report
    if trial.attachment_id is None:
        report.add(check, UNKNOWN, "no attachment to delete", needed)
        return
    pid, aid = trial.pid, trial.attachment_id

    def there() -> Optional[bool]:
        return any(
            aid in (a.get("id"), a.get("aid"), a.get("_id"))
            for a in client.get_attachments(pid)
            if isinstance(a, dict)
        )

    done = _delete(
        report,
        check,
        needed,
        lambda: client.delete_attachment(pid, aid),
        there,
        f"attachment {aid} (of {pid})",
        _ATTACHMENT_HINT,
        "ADMIN_GROUPS or DELETE_GROUPS",
    )
    if done:
        route = "v4 (by id)" if client.attachments_v4() else "v3"
        report.rows[-1].detail += f", by the {route} route"


def delete_block(trial: ThrowAwayDataset) -> None:
    """Delete the origdatablock; without the right, say what the configuration then does."""
    check = "delete the origdatablock"
    client, report = trial.client, trial.report
    if trial.block_id is None:
        report.add(check, UNKNOWN, "no origdatablock to delete")
        return
    pid, bid = trial.pid, trial.block_id

    def there() -> Optional[bool]:
        return any(
            bid in (b.get("_id"), b.get("id"))
            for b in client.get_origdatablocks(pid)
            if isinstance(b, dict)
        )

    _delete(
        report,
        check,
        True,
        lambda: client.delete_origdatablock(bid, pid),
        there,
        f"origdatablock {bid} (of {pid})",
        _DELETE_HINT,
        "DELETE_GROUPS",
    )
    if report.rows[-1].right == "DELETE_GROUPS":
        policy = trial.config.replace_without_delete_right
        report.notes.append(
            "Without the delete right a changed scan keeps its old origdatablocks: with "
            f"replace_without_delete_right: {policy} (configured) the new ones are "
            + ("not posted." if policy == "skip" else "posted beside them.")
        )


def delete_dataset(trial: ThrowAwayDataset) -> None:
    """Delete the dataset itself (not needed), then note how to remove each item by hand."""
    client, pid = trial.client, trial.pid
    item = f"dataset {pid}"
    _delete(
        trial.report,
        "delete the test dataset",
        False,
        lambda: client.delete_dataset(pid),
        lambda: client.get_dataset(pid) is not None,
        item,
        _DELETE_HINT,
        "DELETE_GROUPS",
    )
    _how_to_remove(trial, item)


def _how_to_remove(trial: ThrowAwayDataset, dataset_item: str) -> None:
    """The DELETE request that removes each item, for a member of DELETE_GROUPS."""
    client, report, pid = trial.client, trial.report, trial.pid
    base = client.url
    report.how[dataset_item] = (
        f"DELETE {base}/{client.settings.datasets_path}/{encode_segment(pid)}"
    )
    if trial.block_id is not None:
        report.how[f"origdatablock {trial.block_id} (of {pid})"] = (
            f"DELETE {base}/{client.settings.datablocks_path}/{encode_segment(trial.block_id)}"
        )
    v4 = client.v4_url() if client.attachments_v4() else None
    if trial.attachment_id is not None and v4:
        report.how[f"attachment {trial.attachment_id} (of {pid})"] = (
            f"DELETE {v4}/attachments/{encode_segment(trial.attachment_id)}"
        )
