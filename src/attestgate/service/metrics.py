"""Prometheus metrics, in a registry per app so that several apps can run in one process."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Stage latencies run from milliseconds (policy) to minutes (a large scan).
BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)


class Metrics:
    def __init__(self, queue_depth: Callable[[], int], quarantine_depth: Callable[[], int]) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "attestgate_decisions",
            "Admission decisions by outcome.",
            ["decision"],
            registry=self.registry,
        )
        self.failures = Counter(
            "attestgate_admission_failures",
            "Admissions that ended in an error instead of a decision.",
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "attestgate_stage_seconds",
            "Time spent in each admission stage (identify, scan, evidence, policy, ...).",
            ["stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.admission_seconds = Histogram(
            "attestgate_admission_seconds",
            "Wall-clock time of whole admissions in the worker.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "attestgate_http_requests",
            "HTTP requests by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        queue = Gauge(
            "attestgate_admission_queue_depth",
            "Admissions queued or running.",
            registry=self.registry,
        )
        queue.set_function(lambda: float(queue_depth()))
        quarantine = Gauge(
            "attestgate_quarantine_queue_depth",
            "Artifacts waiting in the quarantine store.",
            registry=self.registry,
        )
        quarantine.set_function(lambda: float(quarantine_depth()))
