"""Prometheus metrics, summed across gunicorn's worker processes (prometheus_client multiprocess mode)."""
import os
import threading
import time

from flask import Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

STREAMS_OPEN = Gauge("chat_streams_open", "Open SSE streams", multiprocess_mode="livesum")
POLLS_WAITING = Gauge("chat_polls_waiting", "Long-polls waiting for events", multiprocess_mode="livesum")
MESSAGES_ACCEPTED = Counter("chat_messages_accepted_total", "Messages acknowledged with 201")
EVENTS_DELIVERED = Counter("chat_events_delivered_total", "Durable events written to a client")
REJECTIONS = Counter("chat_rejections_total", "Requests refused, by error code", ["code"])
DEPENDENCY_ERRORS = Counter("chat_dependency_errors_total", "Redis or database failures met by requests and the hub",
                            ["dependency"])
HUB_LAG = Histogram("chat_hub_lag_seconds", "From an event's commit (its id's time) to this process's hub handing it out",
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
QUEUE_OVERFLOWS = Counter("chat_queue_overflows_total", "Subscribers cut off for falling too far behind (they resume)")
RESETS_SENT = Counter("chat_resets_total", "reset events sent: a client had to reload history")
REQUEST_DURATION = Histogram("chat_request_duration_seconds", "Time to answer a request (to the first byte for streams)",
                             ["endpoint"])


class ProcessTotal:
    """A counter's or a gauge's share of this process, kept in memory and written to the shared metric within
    a second of a change: a shared-memory write (under a lock) per long-poll, three of them, was a tenth of a
    poll's CPU, and one per event and subscriber a measurable share of fan-out's. Changed from one thread's
    greenlets (the worker's), so without a lock of its own."""

    def __init__(self, metric, *, gauge: bool = False):
        self.metric, self.gauge = metric, gauge
        self.value = self.written = 0
        self._due = False

    def add(self, amount: int = 1) -> None:
        self.value += amount
        if not self._due:
            self._due = True
            timer = threading.Timer(1.0, self.write)
            timer.daemon = True
            timer.start()

    def write(self) -> None:
        self._due = False
        value = self.value
        if self.gauge:
            self.metric.set(value)
        elif value != self.written:
            self.metric.inc(value - self.written)
        self.written = value


POLLS_WAITING_HERE = ProcessTotal(POLLS_WAITING, gauge=True)
EVENTS_DELIVERED_HERE = ProcessTotal(EVENTS_DELIVERED)  # by streams and polls


def render() -> Response:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        from prometheus_client import multiprocess  # noqa: PLC0415

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY as registry  # noqa: PLC0415
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


_DURATION_BY_ENDPOINT = {}  # the labelled children, looked up once each


def observe_request(endpoint: str, started: float) -> None:
    child = _DURATION_BY_ENDPOINT.get(endpoint)
    if child is None:
        child = _DURATION_BY_ENDPOINT[endpoint] = REQUEST_DURATION.labels(endpoint=endpoint)
    child.observe(time.perf_counter() - started)


def init_app(app):
    @app.before_request
    def _start_timer():
        g.request_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.get("request_started")
        if started is not None:
            observe_request(request.endpoint or "none", started)
        return response
