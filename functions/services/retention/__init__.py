"""Data retention: what an organization keeps, and for how long.

Two controls. OpenAI's retention type, per organization and per project (a project's own
wins, ``organization_default`` follows the organization's): ``zero_data_retention`` and
``enhanced_zero_data_retention`` store no prompt or output — it rides on the caller's
principal (``Principal.zero_data_retention``, resolved with the credentials and cached
like them), and the areas that would store content refuse or skip it
(``functions.common.principal.refuse_storing``). The other types store as usual. And Jan's
retention periods per kind of data (``KINDS``), per organization, with the server's
defaults (``JAN_RETENTION_*_DAYS``) for organizations that set none; 0 keeps for ever.

The sweeps (``register``) delete what is past its period in bounded batches, each in a
transaction of its own, on one instance at a time (``functions.common.housekeeping``).
Audit events go through the one function the log's append-only trigger allows. The usage
ledger is partitioned by month: one sweep creates the months ahead, and a month past every
organization's period is dropped whole (no row-by-row DELETE); an organization that keeps
its rows less long than the others has its older rows deleted in batches.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from functions.common.db import Executor
from functions.common.housekeeping import Housekeeping
from functions.common.settings import Settings
from functions.services.audit import store as audit_store
from functions.services.retention import store

log = logging.getLogger(__name__)

KINDS = tuple(store.PERIOD_COLUMNS)  # responses, conversation_items, usage_detail, audit_log
ZERO_RETENTION = ("zero_data_retention", "enhanced_zero_data_retention")
ORGANIZATION_TYPES = (
    "zero_data_retention",
    "enhanced_zero_data_retention",
    "modified_abuse_monitoring",
    "enhanced_modified_abuse_monitoring",
    "none",
)
PROJECT_TYPES = ("organization_default", *ORGANIZATION_TYPES)


MAX_DAYS = 36_500
PARTITIONS_AHEAD = 2  # months of the ledger's partitions made before they are needed
MIN_AUDIT_LOG_DAYS = 30  # what an organization may set: its log outlives a quick cover-up


def default_days(settings: Settings) -> dict[str, int]:
    """The server's retention period of each kind, in days (0: kept for ever)."""
    return {kind: int(getattr(settings, f"jan_retention_{kind}_days")) for kind in KINDS}


class Retention:
    """The server's default periods and the sweeps; ``clock`` is the sweeps' notion of now
    (tests move it)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.time) -> None:
        self.defaults = default_days(settings)
        self.clock = clock

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def register(self, keeper: Housekeeping) -> None:
        keeper.add("retention.responses", self.sweep_responses)
        keeper.add("retention.conversation_items", self.sweep_conversation_items)
        keeper.add("retention.usage_detail", self.sweep_usage_detail)
        keeper.add("retention.audit_log", self.sweep_audit_log)
        keeper.add("usage.partitions", self.maintain_partitions)

    async def sweep_responses(self, ex: Executor, *, limit: int) -> int:
        return await store.delete_responses(
            ex, now=self.now(), default_days=self.defaults["responses"], limit=limit
        )

    async def sweep_conversation_items(self, ex: Executor, *, limit: int) -> int:
        return await store.delete_conversation_items(
            ex, now=self.now(), default_days=self.defaults["conversation_items"], limit=limit
        )

    async def sweep_usage_detail(self, ex: Executor, *, limit: int) -> int:
        """Months past every organization's period are dropped whole; the rows of an
        organization with a shorter period than the others' are deleted in batches."""
        now, default = self.now(), self.defaults["usage_detail"]
        horizon = await store.usage_partition_horizon(ex, now=now, default_days=default)
        if horizon is not None:
            dropped = await store.drop_usage_partitions(ex, before=horizon)
            if dropped:
                log.info("usage ledger months dropped", extra={"partitions": dropped})
        return await store.delete_usage_detail(ex, now=now, default_days=default, limit=limit)

    async def maintain_partitions(self, ex: Executor, *, limit: int) -> int:
        """The ledger's months ahead exist before their first row (``PARTITIONS_AHEAD``)."""
        return await store.maintain_usage_partitions(ex, now=self.now(), ahead=PARTITIONS_AHEAD)

    async def sweep_audit_log(self, ex: Executor, *, limit: int) -> int:
        done = 0
        due = await store.audit_cutoffs(ex, now=self.now(), default_days=self.defaults["audit_log"])
        for organization_id, cutoff in due:
            done += await audit_store.expire(
                ex, organization_id=organization_id, before=cutoff, limit=limit - done
            )
            if done >= limit:
                break
        return done
