"""A load generator that sends real inferences to an InferenceService's ready replicas.

There is no kube-proxy on the local cluster, and a Service's ClusterIP leads nowhere,
so the generator balances load itself, the way a client-side load balancer does: it
keeps the list of ready endpoint addresses (re-read every second, so replicas that
come and go gain and lose traffic), spreads requests round robin over them, and
retries a failed request once on another replica. Requests go through tritonclient
at a paced target rate that can change while it runs; ``LoadStats`` keeps the
counts and latency percentiles that the demo's view and summary show.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True)
class LoadSnapshot:
    """The generator's figures at one moment."""

    target_rate: float
    """Requests per second the generator aims at."""
    rate: float
    """Answered requests (successful or not) per second over the recent window."""
    p50_ms: float | None
    """Median latency of the recent window; None without samples."""
    p99_ms: float | None
    """99th percentile latency of the recent window; None without samples."""
    sent: int
    """Inferences sent since the start, retries included."""
    succeeded: int
    failed: int
    """Inferences that failed on every replica tried."""
    retried: int
    """Inferences that failed on one replica and were sent again to another."""
    total_p50_ms: float | None
    """Median latency since the start (from a histogram, within 2 %)."""
    total_p99_ms: float | None
    endpoints: int
    """Ready endpoints the generator currently sends to."""
    by_endpoint: dict[str, int] = field(default_factory=dict)
    """Successful inferences per endpoint address since the start."""
    last_error: str | None = None


class LatencyHistogram:
    """Latencies in log-spaced buckets (2 % wide), for percentiles over a long run in constant memory."""

    RATIO = 1.02
    MIN_S = 1e-5

    def __init__(self) -> None:
        self._counts: collections.Counter[int] = collections.Counter()
        self.count = 0

    def add(self, latency_s: float) -> None:
        self._counts[self._bucket(latency_s)] += 1
        self.count += 1

    def percentile(self, q: float) -> float | None:
        """The latency (seconds) below which ``q`` percent of the samples lie; None when empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(self.count * q / 100))
        seen = 0
        for bucket in sorted(self._counts):
            seen += self._counts[bucket]
            if seen >= rank:
                return self.MIN_S * self.RATIO ** (bucket + 0.5)
        raise AssertionError("unreachable: ranks never exceed the count")

    def _bucket(self, latency_s: float) -> int:
        return max(0, int(math.log(max(latency_s, self.MIN_S) / self.MIN_S, self.RATIO)))


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(len(sorted_values) * q / 100))
    return sorted_values[rank - 1]


class LoadStats:
    """Counts and latencies of the inferences sent; safe to share between threads.

    Recent figures (rate, p50, p99) cover the last ``window_s`` seconds of ``clock``;
    totals cover the whole run. ``clock`` is injectable so tests run on fake time.
    """

    def __init__(self, window_s: float = 10.0, clock: Clock = time.monotonic) -> None:
        self.window_s = window_s
        self.clock = clock
        self.started_at = clock()
        self._lock = threading.Lock()
        self._recent: collections.deque[tuple[float, float, bool]] = collections.deque()
        self._histogram = LatencyHistogram()
        self._by_endpoint: collections.Counter[str] = collections.Counter()
        self.sent = self.succeeded = self.failed = self.retried = 0
        self.last_error: str | None = None

    def record(self, latency_s: float, ok: bool, endpoint: str = "", error: str | None = None,
               retried: bool = False) -> None:
        """One inference answered (``ok``) or failed after ``latency_s`` seconds."""
        now = self.clock()
        with self._lock:
            self.sent += 1
            self._recent.append((now, latency_s, ok))
            self._trim(now)
            if retried:
                self.retried += 1
                return
            if ok:
                self.succeeded += 1
                self._histogram.add(latency_s)
                self._by_endpoint[endpoint] += 1
            else:
                self.failed += 1
                self.last_error = error

    def snapshot(self, target_rate: float = 0.0, endpoints: int = 0) -> LoadSnapshot:
        now = self.clock()
        with self._lock:
            self._trim(now)
            latencies = sorted(lat for _, lat, ok in self._recent if ok)
            span = min(self.window_s, now - self.started_at)
            rate = len(self._recent) / span if span > 0 else 0.0
            total_p50, total_p99 = self._histogram.percentile(50), self._histogram.percentile(99)
            return LoadSnapshot(
                target_rate=target_rate, rate=rate, p50_ms=_ms(percentile(latencies, 50)),
                p99_ms=_ms(percentile(latencies, 99)), sent=self.sent, succeeded=self.succeeded, failed=self.failed,
                retried=self.retried, total_p50_ms=_ms(total_p50), total_p99_ms=_ms(total_p99), endpoints=endpoints,
                by_endpoint=dict(self._by_endpoint), last_error=self.last_error)

    def _trim(self, now: float) -> None:
        while self._recent and self._recent[0][0] <= now - self.window_s:
            self._recent.popleft()


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


class Pacer:
    """Hands out send times ``1/rate`` apart to any number of workers. A generator that
    fell behind (all workers busy) does not burst to catch up: the schedule restarts
    from now, as an open-loop client whose users gave up would."""

    def __init__(self, rate: float, clock: Clock = time.monotonic, max_lag_s: float = 1.0) -> None:
        self.rate = rate
        self.clock = clock
        self.max_lag_s = max_lag_s
        self._next = clock()
        self._lock = threading.Lock()

    def next_send(self) -> float | None:
        """When the next request should go out; None while the rate is zero."""
        with self._lock:
            if self.rate <= 0:
                return None
            now = self.clock()
            if self._next < now - self.max_lag_s:
                self._next = now
            at = self._next
            self._next = at + 1.0 / self.rate
            return at


class LoadGenerator:
    """Sends inferences of ``model`` to the addresses ``endpoints()`` returns (``ip:port``),
    at ``rate`` requests per second, from ``workers`` threads."""

    def __init__(self, endpoints: Callable[[], list[str]], rate: float, model: str = "simple",
                 workers: int = 8, refresh_s: float = 1.0, timeout_s: float = 10.0,
                 stats: LoadStats | None = None) -> None:
        self._read_endpoints = endpoints
        self.model = model
        self.workers = workers
        self.refresh_s = refresh_s
        self.timeout_s = timeout_s
        self.stats = stats or LoadStats()
        self._pacer = Pacer(rate)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._endpoints: list[str] = []
        self._bad: set[str] = set()
        self._turn = 0
        self._lock = threading.Lock()
        self.endpoint_error: str | None = None
        vector = np.arange(16, dtype=np.float32)
        self._inputs = (vector, vector[::-1].copy())
        self._expected = self._inputs[0] + self._inputs[1]

    @property
    def rate(self) -> float:
        return self._pacer.rate

    @rate.setter
    def rate(self, value: float) -> None:
        self._pacer.rate = value

    @property
    def endpoints(self) -> list[str]:
        with self._lock:
            return list(self._endpoints)

    def snapshot(self) -> LoadSnapshot:
        return self.stats.snapshot(self.rate, len(self.endpoints))

    def start(self) -> None:
        self._refresh()
        self._threads = [threading.Thread(target=self._keep_endpoints, name="loadgen-endpoints", daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"loadgen-{i}", daemon=True)
                          for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop sending; waits for requests in flight (each bounded by ``timeout_s``)."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    # -- endpoints -------------------------------------------------------------------------------------

    def _keep_endpoints(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self._refresh()

    def _refresh(self) -> None:
        try:
            addresses = sorted(self._read_endpoints())
            self.endpoint_error = None
        except Exception as exc:  # the API server may be briefly unreachable; keep the last list
            self.endpoint_error = f"cannot read endpoints: {exc}"
            log.debug("%s", self.endpoint_error)
            return
        with self._lock:
            self._endpoints = addresses
            self._bad.clear()  # a fresh list from the API is trusted again

    def _pick(self, avoid: str | None = None) -> str | None:
        with self._lock:
            usable = [a for a in self._endpoints if a not in self._bad and a != avoid]
            if not usable:
                return None
            self._turn += 1
            return usable[self._turn % len(usable)]

    def _mark_bad(self, address: str) -> None:
        with self._lock:
            self._bad.add(address)

    # -- sending ---------------------------------------------------------------------------------------

    def _work(self) -> None:
        import tritonclient.http as triton_http

        clients: dict[str, triton_http.InferenceServerClient] = {}
        try:
            while not self._stop.is_set():
                at = self._pacer.next_send()
                if at is None:
                    self._stop.wait(0.2)
                    continue
                delay = at - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                address = self._pick()
                if address is None:
                    self._stop.wait(0.2)  # no ready replica yet: nothing to send to
                    continue
                self._send(clients, address, retry=True)
                for gone in set(clients) - set(self.endpoints):
                    clients.pop(gone).close()
        finally:
            for client in clients.values():
                client.close()

    def _send(self, clients: dict[str, object], address: str, retry: bool) -> None:
        started = time.monotonic()
        try:
            self._infer(clients, address)
        except Exception as exc:
            latency = time.monotonic() - started
            broken = clients.pop(address, None)
            if broken is not None:
                broken.close()  # type: ignore[attr-defined]
            self._mark_bad(address)
            other = self._pick(avoid=address) if retry else None
            if other is not None:
                self.stats.record(latency, False, address, retried=True)
                self._send(clients, other, retry=False)
            else:
                self.stats.record(latency, False, address, error=f"{address}: {_short(exc)}")
            return
        self.stats.record(time.monotonic() - started, True, address)

    def _infer(self, clients: dict[str, object], address: str) -> None:
        import tritonclient.http as triton_http

        client = clients.get(address)
        if client is None:
            client = clients[address] = triton_http.InferenceServerClient(
                address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s)
        inputs = [triton_http.InferInput("INPUT0", [16], "FP32"), triton_http.InferInput("INPUT1", [16], "FP32")]
        inputs[0].set_data_from_numpy(self._inputs[0])
        inputs[1].set_data_from_numpy(self._inputs[1])
        result = client.infer(self.model, inputs,  # type: ignore[attr-defined]
                              outputs=[triton_http.InferRequestedOutput("OUTPUT0")])
        answer = result.as_numpy("OUTPUT0")
        if answer is None or not np.array_equal(answer, self._expected):
            raise ValueError(f"wrong answer from {self.model}: {answer!r}")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


__all__ = ["LatencyHistogram", "LoadGenerator", "LoadSnapshot", "LoadStats", "Pacer", "percentile"]
