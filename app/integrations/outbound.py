"""Outgoing HTTP that cannot be aimed at the server's own network (SSRF protection).

Every request resolves the host name, checks each address and connects to a checked address
itself, so a DNS answer cannot change between the check and the connection. Loopback, private,
link-local (including the 169.254.169.254 metadata address), multicast, reserved and other
non-global addresses are rejected before any connection is made, and again for every redirect,
unless OUTBOUND_ALLOW_HOSTS names the host or address.
"""

import ipaddress
import logging
import socket
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from flask import current_app

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


class OutboundError(Exception):
    """A request that failed; `reason` is a short machine-readable cause."""

    reason = "failed"


class OutboundBlocked(OutboundError):
    reason = "blocked"


class OutboundTimeout(OutboundError):
    reason = "timeout"


@dataclass
class OutboundResponse:
    status: int
    headers: dict
    body: bytes
    url: str
    redirects: list = field(default_factory=list)

    def json_or_text(self):
        import json

        text = self.body.decode("utf-8", errors="replace")
        try:
            return json.loads(text)
        except ValueError:
            return text


def allow_list(config=None):
    """Split OUTBOUND_ALLOW_HOSTS into host names and networks."""
    raw = (config or current_app.config).get("OUTBOUND_ALLOW_HOSTS", "")
    names, networks = set(), []
    for entry in (item.strip() for item in raw.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.add(entry.lower().rstrip("."))
    return names, networks


def is_public_address(address):
    """True for addresses on the public internet; False for every kind a server must not reach for a user."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return False
    return ip.is_global


def resolve_checked(host, port):
    """Resolve `host` and return the addresses it may connect to, or raise OutboundBlocked.

    Every address the name resolves to must pass, so a name with one public and one private
    address is rejected rather than connected at random.
    """
    if not host:
        raise OutboundBlocked("The URL has no host name.")
    names, networks = allow_list()
    host = host.lower().rstrip(".")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise OutboundError(f"Could not resolve host {host!r}: {error}.") from error
    addresses = []
    for info in infos:
        address = info[4][0].split("%", 1)[0]
        if address not in addresses:
            addresses.append(address)
    if host in names:
        return addresses
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if any(ip in network for network in networks):
            continue
        if not is_public_address(address):
            raise OutboundBlocked(
                f"Requests to {host} ({address}) are not allowed: it is a loopback, private, link-local or "
                "reserved address. An operator can allow it with OUTBOUND_ALLOW_HOSTS."
            )
    return addresses


def _open_pool(scheme, address, port, host, timeout):
    """Open a connection pool to one checked address, with TLS verified against the host name."""
    if scheme == "https":
        return urllib3.HTTPSConnectionPool(
            address,
            port,
            timeout=timeout,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            ca_certs=certifi.where(),
            server_hostname=host,
            assert_hostname=host,
        )
    return urllib3.HTTPConnectionPool(address, port, timeout=timeout, retries=False, maxsize=1)


def request(method, url, *, headers=None, body=None, timeout=30.0, max_bytes=None):
    """Send one HTTP request, following up to MAX_REDIRECTS redirects, each host checked first.

    Raises OutboundBlocked before connecting to a rejected address, OutboundTimeout when the
    timeout (seconds, for connecting and for each read) passes, OutboundError for other failures.
    """
    max_bytes = max_bytes or current_app.config.get("OUTBOUND_MAX_RESPONSE_BYTES", 1024 * 1024)
    headers = dict(headers or {})
    redirects = []
    for _ in range(MAX_REDIRECTS + 1):
        response = _send_once(method, url, headers, body, timeout, max_bytes)
        location = response.headers.get("location")
        if response.status not in REDIRECT_STATUSES or not location:
            response.redirects = redirects
            return response
        redirects.append(url)
        url = urljoin(url, location)
        if response.status == 303 or (response.status in (301, 302) and method not in ("GET", "HEAD")):
            method, body = "GET", None
            headers = {name: value for name, value in headers.items() if name.lower() != "content-type"}
        if urlsplit(url).netloc != urlsplit(redirects[-1]).netloc:
            # Credentials meant for one host are never forwarded to another.
            headers = {name: value for name, value in headers.items() if name.lower() != "authorization"}
    raise OutboundError(f"Too many redirects (more than {MAX_REDIRECTS}), last to {url}.")


def _send_once(method, url, headers, body, timeout, max_bytes):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise OutboundBlocked(f"Only http and https URLs are allowed, got {url[:100]!r}.")
    if parts.username or parts.password:
        raise OutboundBlocked("URLs with a user name or password are not allowed; use headers or an integration.")
    host = parts.hostname
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise OutboundError(f"Invalid port in URL {url[:100]!r}.") from error
    addresses = resolve_checked(host, port)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    send_headers = {"Host": parts.netloc.rsplit("@", 1)[-1], "User-Agent": "Floyo", **headers}
    pool = _open_pool(parts.scheme, addresses[0], port, host, urllib3.Timeout(connect=timeout, read=timeout))
    try:
        raw = pool.urlopen(
            method, path, body=body, headers=send_headers, redirect=False, preload_content=False, assert_same_host=False
        )
        try:
            content = raw.read(max_bytes + 1)
        finally:
            raw.release_conn()
    except (urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError) as error:
        raise OutboundTimeout(f"{method} {host} timed out after {timeout:g} seconds.") from error
    except urllib3.exceptions.HTTPError as error:
        cause = error.reason if isinstance(error, urllib3.exceptions.MaxRetryError) else error
        if isinstance(cause, urllib3.exceptions.ConnectTimeoutError | urllib3.exceptions.ReadTimeoutError):
            raise OutboundTimeout(f"{method} {host} timed out after {timeout:g} seconds.") from error
        raise OutboundError(f"{method} {host} failed: {cause}.") from error
    finally:
        pool.close()
    if len(content) > max_bytes:
        raise OutboundError(f"The response from {host} is larger than {max_bytes} bytes.")
    response_headers = {name.lower(): value for name, value in raw.headers.items()}
    return OutboundResponse(status=raw.status, headers=response_headers, body=content, url=url)


def open_smtp_checked(host, port, timeout):
    """Connect to an SMTP server named by a user, after the same address checks."""
    import smtplib

    addresses = resolve_checked(host, port)
    connection = smtplib.SMTP(timeout=timeout)
    connection._host = host  # STARTTLS checks the certificate against this name.
    connection.connect(addresses[0], port)
    return connection
