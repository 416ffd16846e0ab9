"""Error classes of the public plugin contract.

Plugins raise these to tell the engine how to treat a failure; anything else a plugin raises
is treated as a bug in that plugin, recorded with plugin, warehouse and item, and isolated.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class NebridgeError(Exception):
    """Base class of every error nebridge raises on purpose."""


class StepNotReady(NebridgeError):
    """A transient condition: the engine retries the item at a later run, with backoff."""


class StepAuthError(NebridgeError):
    """Credentials are missing or rejected: the step needs an admin before it can run again."""


class StepError(NebridgeError):
    """A permanent failure for one item: the item is held with this message as its reason."""


@dataclass(frozen=True, slots=True)
class RecordError:
    """One problem found in inbound data, located as precisely as the source allows."""

    source: str
    reason: str
    line: int | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
        if self.column:
            where += f" [{self.column}]"
        return f"{where}: {self.reason}"


@dataclass
class BatchRejected(NebridgeError):
    """A whole inbound batch (file, API page) is invalid; nothing from it may be applied."""

    source: str
    errors: list[RecordError] = field(default_factory=list)

    def __str__(self) -> str:
        shown = "; ".join(str(e) for e in self.errors[:3])
        more = f" (+{len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
        return f"{self.source} rejected: {shown}{more}"


class OrdersRefused(StepError):
    """Raised by ``push_orders``: these orders of the batch cannot be instructed as they are.

    ``refused`` maps each refused ``ne_order_id`` to the reason (what is wrong and where to
    fix it). The connector raises it only after it delivered *every other* order of the
    batch, and it wrote nothing of the refused ones (the WMS never gets half an order or half
    a file). The engine then holds the refused orders alone, with their reasons, and counts
    the batch delivered without them; ``nebridge orders retry ID`` renders a held order again
    from Next Engine once it is fixed. Pushing the same batch again must refuse the same
    orders and deliver the same others (idempotent for the same ``batch.key``).
    """

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = dict(refused)
        shown = "; ".join(f"order {oid}: {why}" for oid, why in list(self.refused.items())[:3])
        more = f" (+{len(self.refused) - 3} more)" if len(self.refused) > 3 else ""
        super().__init__(f"{len(self.refused)} order(s) refused: {shown}{more}")


class CancellationsRefused(StepError):
    """Raised by ``push_cancellations``: the WMS can no longer drop these orders.

    ``refused`` maps each ``ne_order_id`` to what the WMS said (e.g. "picking started"). The
    connector raises it only after it cancelled every other order of the batch. The engine
    shows each refused order in ``nebridge attention`` (a person must stop it in the WMS) and
    never instructs the new version of a refused edited order.
    """

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = dict(refused)
        shown = "; ".join(f"order {oid}: {why}" for oid, why in list(self.refused.items())[:3])
        more = f" (+{len(self.refused) - 3} more)" if len(self.refused) > 3 else ""
        super().__init__(f"the WMS refused to cancel {len(self.refused)} order(s): {shown}{more}")
