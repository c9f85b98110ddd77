"""Sending queued events to the Floyo server in batches, and retrying with backoff while it is away."""

import email.utils
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import requests

from floyo_agent import __version__
from floyo_agent.events import local_now

logger = logging.getLogger(__name__)

BATCH_PATH = "/api/v1/events/batch"
# The server takes up to 1,000 events and 1 MB per batch by default. The agent stays well below both,
# so a server with smaller limits still takes most batches whole; a 413 splits the batch.
MAX_BATCH_EVENTS = 500
MAX_BATCH_BYTES = 900_000
# Seconds to wait for the connection and for the response.
REQUEST_TIMEOUT = (5, 30)
# Statuses that blame the content of the request. Without results per item, the batch is split
# until the event that causes them is alone, and that event is dropped.
CONTENT_ERROR_STATUSES = (400, 413, 422)
# The longest Retry-After the agent honours, in seconds; a larger value is treated as this.
MAX_RETRY_AFTER = 3600


class KeyRejected(Exception):
    """The server responded 401: the API key is invalid or revoked."""


class DeliveryFailed(Exception):
    """The batch could not be delivered now; it stays queued for a later attempt."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class FlushReport:
    """The outcome of one flush: counts per result, and the error that stopped it early, if any."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    remaining: int = 0
    error: str | None = None
    key_rejected: bool = False
    retry_after: float | None = None

    @property
    def delivered(self):
        return self.accepted + self.duplicates


def server_base_url(url):
    """Return the server's base URL without a trailing slash or a trailing /api/v1."""
    url = url.rstrip("/")
    if url.endswith("/api/v1"):
        url = url[: -len("/api/v1")]
    return url


class Sender:
    """Sends the events of a DiskQueue to the server's batch endpoint and removes what it took.

    An event leaves the queue when the server accepted it, reported it as a duplicate (an earlier
    attempt stored it although its answer was lost) or rejected it. A rejected event is logged and
    dropped, so one bad event cannot block the queue. Everything else keeps the events queued.
    """

    def __init__(self, queue, server_url, api_key, *, batch_size=MAX_BATCH_EVENTS, session=None):
        self.queue = queue
        self.server_url = server_base_url(server_url)
        self.batch_url = self.server_url + BATCH_PATH
        self.batch_size = batch_size
        self._api_key = api_key
        self._session = session or requests.Session()

    def flush(self, timeout=REQUEST_TIMEOUT):
        """Send queued batches until the queue is empty or the server cannot take more for now."""
        report = FlushReport()
        while True:
            batch = self._next_batch()
            if not batch:
                break
            try:
                self._deliver(batch, report, timeout)
            except KeyRejected as error:
                report.key_rejected = True
                report.error = str(error)
                break
            except DeliveryFailed as error:
                report.error = str(error)
                report.retry_after = error.retry_after
                break
        if report.delivered or report.rejected:
            self.queue.set_state(last_success_at=_timestamp())
        if report.error:
            self.queue.set_state(last_error=report.error, last_error_at=_timestamp())
        report.remaining = self.queue.count()
        return report

    def _next_batch(self):
        """Return the oldest queued events that fit one batch by count and by size."""
        batch = []
        size = 0
        for queued in self.queue.peek(self.batch_size):
            size += len(queued.body.encode()) + 1
            if batch and size > MAX_BATCH_BYTES:
                break
            batch.append(queued)
        return batch

    def _deliver(self, batch, report, timeout):
        """Send one batch and take its events off the queue, or raise KeyRejected or DeliveryFailed."""
        response = self._post(batch, timeout)
        status = response.status_code
        if status == 401:
            raise KeyRejected(
                f"The server rejected the API key (401): {_server_message(response)} "
                "Create a new key in Floyo's settings and pass it with --key or FLOYO_API_KEY."
            )

        results = _item_results(response, len(batch)) if status < 300 or status == 422 else None
        if results is not None:
            for queued, result in zip(batch, results, strict=True):
                self._count_result(queued, result, report)
            self.queue.remove([queued.id for queued in batch])
            return

        if status in CONTENT_ERROR_STATUSES and len(batch) > 1:
            middle = len(batch) // 2
            self._deliver(batch[:middle], report, timeout)
            self._deliver(batch[middle:], report, timeout)
            return
        if status in CONTENT_ERROR_STATUSES and _is_floyo_error(response):
            queued = batch[0]
            logger.warning(
                "Dropped event %s (%s): the server rejected it with %s: %s",
                queued.event_id,
                queued.event.get("path"),
                status,
                _server_message(response),
            )
            report.rejected += 1
            self.queue.remove([queued.id])
            return

        if 300 <= status < 400:
            location = response.headers.get("Location", "another address")
            raise DeliveryFailed(
                f"{self.batch_url} redirected to {location} ({status}); set the server URL to the address "
                "it redirects to."
            )
        if status == 404:
            raise DeliveryFailed(
                f"{self.batch_url} was not found (404); check that the server URL is the address of a Floyo server."
            )
        raise DeliveryFailed(
            f"{self.batch_url} responded {status}: {_server_message(response)}",
            retry_after=_retry_after(response),
        )

    def _post(self, batch, timeout):
        # The stored bodies are joined as they are, so a resend carries exactly the bytes of the first try.
        body = '{"source":"agent","events":[' + ",".join(queued.body for queued in batch) + "]}"
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Content-Type": "application/json",
            "User-Agent": f"floyo-agent/{__version__}",
        }
        try:
            return self._session.post(
                self.batch_url, data=body.encode(), headers=headers, timeout=timeout, allow_redirects=False
            )
        except requests.Timeout as error:
            raise DeliveryFailed(f"{self.batch_url} timed out: {_connection_reason(error)}") from error
        except requests.RequestException as error:
            raise DeliveryFailed(f"Cannot reach {self.server_url}: {_connection_reason(error)}") from error

    def _count_result(self, queued, result, report):
        status = result.get("status")
        if status == "accepted":
            report.accepted += 1
        elif status == "duplicate":
            report.duplicates += 1
        else:
            report.rejected += 1
            logger.warning(
                "Dropped event %s (%s): the server rejected it: %s",
                queued.event_id,
                queued.event.get("path"),
                _describe_item_errors(result.get("errors")),
            )


class SendLoop(threading.Thread):
    """Sends queued events in the background while `watch` runs.

    It sends when woken (new events were queued) and every `idle_interval` seconds, which also picks
    up events that another process queued. After a failure it waits with exponential backoff, from
    one second up to `max_backoff` or the server's Retry-After, and new events wait with it. A
    rejected API key stops it: events are still queued but not sent until the agent restarts.
    """

    def __init__(self, sender, *, max_backoff=300.0, idle_interval=60.0):
        super().__init__(name="floyo-agent-sender", daemon=True)
        self.sender = sender
        self.max_backoff = max_backoff
        self.idle_interval = idle_interval
        self.failures = 0
        self.key_rejected = False
        self._wake = threading.Event()
        self._stopping = threading.Event()

    def wake(self):
        self._wake.set()

    def stop(self):
        self._stopping.set()
        self._wake.set()

    def run(self):
        # Events left queued by an earlier run are sent straight away.
        next_attempt = time.monotonic()
        while not self._stopping.is_set():
            delay = next_attempt - time.monotonic()
            if delay > 0:
                self._wake.wait(delay)
                if self._stopping.is_set():
                    break
                if self.failures and time.monotonic() < next_attempt:
                    # Woken during backoff: the new events wait for the next attempt with the others.
                    self._wake.clear()
                    continue
            self._wake.clear()
            next_attempt = self._attempt()
            if self.key_rejected:
                return
        if self.failures == 0:
            # A last, short attempt for what the watcher queued while stopping; what it cannot send
            # stays queued for the next run.
            self._attempt(timeout=(2, 5))

    def _attempt(self, timeout=REQUEST_TIMEOUT):
        """Flush once and return the monotonic time of the next attempt."""
        report = self.sender.flush(timeout=timeout)
        if report.delivered or report.rejected:
            logger.info(
                "Sent events to %s: %d accepted, %d duplicates, %d rejected; %d queued",
                self.sender.server_url,
                report.accepted,
                report.duplicates,
                report.rejected,
                report.remaining,
            )
        if report.key_rejected:
            self.key_rejected = True
            logger.error(
                "%s Sending stopped; queued events kept in %s: %d.",
                report.error,
                self.sender.queue.path,
                report.remaining,
            )
            return None
        if report.error is None:
            if self.failures:
                logger.info("Reached %s again after %d failed attempts", self.sender.server_url, self.failures)
            self.failures = 0
            return time.monotonic() + self.idle_interval

        self.failures += 1
        delay = backoff_delay(self.failures, self.max_backoff, report.retry_after)
        # The first failure and every tenth are warnings; the retries between them would flood the log.
        log = logger.warning if self.failures % 10 == 1 else logger.debug
        log(
            "Sending failed (attempt %d): %s. Queued events: %d; next attempt in %.1f s",
            self.failures,
            report.error,
            report.remaining,
            delay,
        )
        return time.monotonic() + delay


def backoff_delay(failures, max_backoff, retry_after=None):
    """Return seconds to wait after `failures` failed attempts in a row: doubling from 1 s, with jitter."""
    delay = min(max_backoff, 2.0 ** min(failures - 1, 30))
    # Up to 10% jitter keeps agents that lost the same server from returning in step.
    delay *= random.uniform(0.9, 1.0)
    if retry_after is not None:
        delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
    return delay


def _timestamp():
    return local_now().isoformat(timespec="seconds")


def _item_results(response, expected):
    """Return the answer's per-item results in batch order, or None when the answer has none that fit."""
    try:
        results = response.json().get("results")
    except (ValueError, AttributeError):
        return None
    if not isinstance(results, list) or len(results) != expected:
        return None
    ordered = [None] * expected
    for position, result in enumerate(results):
        if not isinstance(result, dict):
            return None
        index = result.get("index", position)
        if not isinstance(index, int) or not 0 <= index < expected or ordered[index] is not None:
            return None
        ordered[index] = result
    return ordered


def _is_floyo_error(response):
    """Return True for Floyo's error envelope, as opposed to an error page of a proxy in front of it."""
    try:
        return isinstance(response.json().get("error"), dict)
    except (ValueError, AttributeError):
        return False


def _server_message(response):
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    text = " ".join(response.text.split())
    return text[:200] or response.reason or "no message"


def _describe_item_errors(errors):
    if not errors:
        return "no reason given"
    parts = []
    for error in errors if isinstance(errors, list) else [errors]:
        if isinstance(error, dict):
            field = error.get("field")
            message = error.get("message") or json.dumps(error)
            parts.append(f"{field}: {message}" if field else message)
        else:
            parts.append(str(error))
    return "; ".join(parts)


_ERRNO_REASON = re.compile(r"\[Errno -?\d+\] [^'\")]+")


def _connection_reason(error):
    """Return the short reason inside requests' long connection error, such as 'Connection refused'."""
    text = str(error)
    match = _ERRNO_REASON.search(text)
    if match:
        return match.group(0).strip()
    if isinstance(error, requests.Timeout):
        return "no answer in time"
    return text[:200]


def _retry_after(response):
    """Return the Retry-After header in seconds, or None when it is missing or invalid."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - datetime.now(UTC)).total_seconds())
