"""The adapter's counters and gauges, in one prometheus_client registry.

Each ``Adapter`` owns one ``Metrics`` (never prometheus_client's module-global default
registry), so tests, the demo and several adapters in one process count apart.  The
worker, the poller and the gateway's call audit write here; ``run_once``'s and
``run_until_idle``'s counts stay what one call did, the registry is what the process did.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

#: the PollCounts fields that count outcomes of fetched items (``cursor`` is a position)
POLL_RESULTS = ("applied", "duplicates", "stale", "unknown", "invalid")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.delivery_claims = Counter("archive_oa_delivery_claims", "Deliveries claimed for an attempt", registry=r)
        self.deliveries = Counter(
            "archive_oa_delivery_attempts",
            "Delivery attempts by how they settled (delivered, adopted, retrying, dead, lost, released, errors)",
            ["result"], registry=r,
        )
        self.delivery_failures = Counter(
            "archive_oa_delivery_failures", "Failed attempts (retrying or dead) by failure class",
            ["failure"], registry=r,
        )
        self.delivery_anomalies = Counter(
            "archive_oa_delivery_anomalies", "Keys the OA held more than one request for", registry=r,
        )
        self.poll_batches = Counter(
            "archive_oa_poll_batches",
            "Batches fetched from the OA's completed queue: ok, or conflict (another poller moved the cursor)",
            ["result"], registry=r,
        )
        self.poll_items = Counter(
            "archive_oa_poll_items", "Fetched decisions by what applying them did", ["result"], registry=r,
        )
        self.poll_cursor = Gauge(
            "archive_oa_poll_cursor", "The completed queue's cursor after the last poll", registry=r,
        )
        self.gateway_calls = Counter(
            "archive_oa_gateway_calls", "Gateway operation calls by operation and outcome (OK or the fault code)",
            ["operation", "outcome"], registry=r,
        )

    # --- what the parts report ---------------------------------------------------------

    def delivery_settled(self, result: str, anomaly: bool, failure) -> None:
        """One attempt ended as ``result`` (a DeliveryCounts field); ``failure`` its FailureClass."""
        self.deliveries.labels(result).inc()
        if anomaly:
            self.delivery_anomalies.inc()
        if failure is not None and result in ("retrying", "dead"):
            self.delivery_failures.labels(failure.value).inc()

    def polled(self, counts) -> None:
        """One poll batch (a PollCounts of ``batches=1``)."""
        self.poll_batches.labels("conflict" if counts.conflicts else "ok").inc()
        for result in POLL_RESULTS:
            if getattr(counts, result):
                self.poll_items.labels(result).inc(getattr(counts, result))
        self.poll_cursor.set(counts.cursor)

    def gateway_call(self, operation: str, outcome: str) -> None:
        self.gateway_calls.labels(operation, outcome).inc()

    # --- reading -------------------------------------------------------------------------

    def value(self, name: str, **labels: str) -> float:
        """A sample's value, 0 when never counted: ``value("archive_oa_delivery_attempts_total",
        result="retrying")``."""
        return self.registry.get_sample_value(name, labels) or 0.0
