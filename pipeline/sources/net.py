"""Fetching from the network without trusting it: limits, schemes, addresses, redirects, time.

Every feed, audio download, reference transcript and weights file podscribe fetches goes through
``NetSession``. It

- fetches only ``http``/``https`` URLs, on every redirect hop too, and follows at most
  ``max_redirects`` redirects (a loop is named as one);
- resolves host names itself (``resolve_host``) and, unless ``allow_private_networks`` is set,
  refuses a host any of whose addresses is loopback, private, link-local, reserved, multicast or
  unspecified. The check runs where the socket is opened, for each connection, and the socket is
  connected to the address that was checked, so DNS rebinding between check and connect is
  impossible;
- bounds each operation's total time: a timer shuts the socket down at the deadline, so a server
  that sends a byte a minute (or headers a byte at a time) is stopped at the limit, not only
  after a silent read.

Limits arrive as a frozen ``FetchLimits`` value built at the edge (CLI, flows) from the settings;
nothing here reads the environment.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlparse

import httpcore
import httpx
from httpcore._backends.sync import SyncBackend

from pipeline.core.errors import FetchError, OptionsError, UnsafeURLError

SETTING_PREFIX = "PODSCRIBE_"  # each FetchLimits field is the setting PODSCRIBE_<FIELD>
SCHEMES = ("http", "https")
_USER_AGENT = "podscribe/0.1"  # some CDNs refuse requests without one


@dataclass(frozen=True)
class FetchLimits:
    """What podscribe accepts from the network; each field is also the setting of that name."""

    connect_timeout_s: float = 10.0  # seconds to open a connection
    read_timeout_s: float = 30.0  # seconds of silence from a server before an attempt fails
    # Total seconds per operation, retries included, whatever the server's pace:
    download_timeout_s: float = 3600.0  # an episode's audio or a weights file
    request_timeout_s: float = 120.0  # a feed or a reference transcript
    max_download_bytes: int = 2_000_000_000  # far above any real episode, far below a full disk
    max_feed_bytes: int = 20 * 1024 * 1024  # the largest real feeds are a few MB
    max_feed_items: int = 5000  # items read from one feed; the rest are ignored (and logged)
    max_reference_bytes: int = 20 * 1024 * 1024  # a transcript is text: anything larger is not
    max_redirects: int = 5
    # Loopback, private (10/8, 192.168/16, fc00::/7 ...) and link-local (169.254/16, where cloud
    # metadata services live) addresses are refused unless this is set: a feed must not make
    # podscribe fetch from the machine's own network. Local feeds, the demo and tests set it.
    allow_private_networks: bool = False
    # Networks allowed even so, e.g. ("192.168.1.20/32",) for one NAS that serves a feed.
    allowed_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "allowed_networks":
                _parse_networks(value)
            elif f.name == "allow_private_networks":
                if not isinstance(value, bool):
                    raise OptionsError(f"{setting_name(f.name)} must be true or false")
            elif f.name == "max_redirects":
                if not isinstance(value, int) or value < 0:
                    raise OptionsError(f"{setting_name(f.name)} must be 0 or more, not {value!r}")
            elif not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise OptionsError(
                    f"{setting_name(f.name)} must be a positive number, not {value!r}"
                )


def _parse_networks(
    networks: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks)
    except (ValueError, TypeError, AttributeError) as exc:
        raise OptionsError(
            f"{setting_name('allowed_networks')}: {networks!r} is not a list of networks "
            f"such as 192.168.1.0/24 ({exc})"
        ) from None


def setting_name(field: str) -> str:
    """The environment setting that sets FetchLimits field ``field``."""
    return SETTING_PREFIX + field.upper()


# --- addresses -------------------------------------------------------------------------------


def resolve_host(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (IP literals resolve to themselves), in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_problem(address: str) -> str | None:
    """Why ``address`` is not a public internet address (e.g. "loopback"), or None if it is."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    checks = (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("unspecified", ip.is_unspecified),
        ("reserved", ip.is_reserved),
        ("not global", not ip.is_global),
    )
    return next((name for name, bad in checks if bad), None)


def check_url(url: str) -> None:
    """Refuse a URL whose scheme is not http(s) or that has no host."""
    parsed = urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme not in SCHEMES:
        shown = f"{scheme}://" if scheme else "no scheme"
        raise UnsafeURLError(f"refusing {url}: only http and https URLs are fetched ({shown})")
    if not parsed.hostname:
        raise UnsafeURLError(f"refusing {url}: not a valid URL (it has no host)")


class _CheckedBackend(SyncBackend):
    """httpcore's socket backend, resolving and checking every address before connecting."""

    def __init__(self, limits: FetchLimits, deadline: float) -> None:
        self._allow_private = limits.allow_private_networks
        self._allowed = _parse_networks(limits.allowed_networks)
        self._deadline = deadline
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve_host(host, port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not self._allow_private:
            for address in addresses:
                problem = address_problem(address)
                if problem and not self._is_allowed(address):
                    raise UnsafeURLError(
                        f"host {host} resolves to {address}, a {problem} address "
                        f"(set {setting_name('allow_private_networks')}=true, or list it in "
                        f"{setting_name('allowed_networks')}, to fetch from local networks)"
                    )
        # Connect to the checked addresses themselves, never the name again: the name could
        # resolve elsewhere a second time. TLS still verifies the certificate for ``host``.
        error: Exception = httpcore.ConnectError(f"{host} has no address")
        for address in addresses:
            try:
                stream = super().connect_tcp(address, port, timeout, local_address, socket_options)
                break
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        else:
            raise error
        self._arm_deadline(stream)
        return stream

    def _is_allowed(self, address: str) -> bool:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        return any(ip.version == net.version and ip in net for net in self._allowed)

    def _arm_deadline(self, stream: httpcore.NetworkStream) -> None:
        """Shut the socket down at the deadline: a blocked read returns at once."""
        sock = stream.get_extra_info("socket")
        remaining = self._deadline - time.monotonic()

        def stop() -> None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

        if remaining <= 0:
            stop()
            return
        timer = threading.Timer(remaining, stop)
        timer.daemon = True
        timer.start()
        with self._lock:
            self._timers.append(timer)

    def cancel_timers(self) -> None:
        with self._lock:
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()


class _CheckedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that uses ``_CheckedBackend``."""

    def __init__(self, backend: _CheckedBackend) -> None:
        super().__init__(retries=0)
        # httpx does not expose httpcore's network_backend: replace the pool it built with one
        # that uses ours (same defaults as httpx's own pool).
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=10,
            max_keepalive_connections=5,
            keepalive_expiry=5.0,
            network_backend=backend,
        )
        self._backend = backend

    def close(self) -> None:
        self._backend.cancel_timers()
        super().close()


class NetSession:
    """One fetch operation (a download with its retries, a feed, a reference): a client and a
    total deadline. Use as a context manager."""

    def __init__(self, limits: FetchLimits, total_s: float, total_setting: str) -> None:
        self.limits = limits
        self.total_s = total_s
        self._total_setting = total_setting
        self.deadline = time.monotonic() + total_s
        self._backend = _CheckedBackend(limits, self.deadline)
        self.client = httpx.Client(
            transport=_CheckedTransport(self._backend),
            timeout=httpx.Timeout(
                limits.read_timeout_s, connect=limits.connect_timeout_s, pool=limits.read_timeout_s
            ),
            follow_redirects=False,  # followed in get(), checking each hop
            trust_env=False,  # no proxy from the environment: addresses are checked here
            headers={"User-Agent": _USER_AGENT},
        )

    def __enter__(self) -> NetSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def expired(self) -> bool:
        """True once the total time of this operation is used up."""
        return time.monotonic() >= self.deadline

    def timeout_error(self, url: str) -> FetchError:
        """The error for a fetch stopped by the total time limit."""
        return FetchError(
            f"cannot fetch {url}: took longer than {self.total_s:g} s in total "
            f"(the limit is {setting_name(self._total_setting)})"
        )

    @contextlib.contextmanager
    def get(self, url: str, headers: dict[str, str] | None = None) -> Iterator[httpx.Response]:
        """GET ``url`` as a stream, following redirects one checked hop at a time.

        httpx errors pass through (callers decide what is transient) unless the total time is
        up, which raises FetchError. Refusals raise UnsafeURLError.
        """
        check_url(url)
        request = self.client.build_request("GET", url, headers=headers)
        seen = {str(request.url)}
        for _ in range(self.limits.max_redirects + 1):
            response = self._send(request, url)
            if not response.is_redirect or response.next_request is None:
                try:
                    yield response
                finally:
                    response.close()
                return
            response.close()
            request = response.next_request
            target = str(request.url)
            check_url(target)
            if target in seen:
                raise FetchError(f"cannot fetch {url}: redirect loop (back to {target})")
            seen.add(target)
        raise FetchError(
            f"cannot fetch {url}: more than {self.limits.max_redirects} redirects "
            f"(the limit is {setting_name('max_redirects')})"
        )

    def _send(self, request: httpx.Request, url: str) -> httpx.Response:
        if self.expired():
            raise self.timeout_error(url)
        try:
            return self.client.send(request, stream=True)
        except UnsafeURLError as exc:
            raise UnsafeURLError(f"refusing {request.url}: {exc}") from None
        except httpx.TransportError:
            if self.expired():
                raise self.timeout_error(url) from None
            raise

    def iter_bytes(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        """The body's blocks as they arrive, stopped with FetchError at the total deadline."""
        try:
            for block in response.iter_bytes():
                if self.expired():
                    raise self.timeout_error(url)
                yield block
        except httpx.TransportError:
            if self.expired():
                raise self.timeout_error(url) from None
            raise

    def read_capped(self, response: httpx.Response, url: str, max_bytes: int, field: str) -> bytes:
        """The whole body, refused (FetchError naming the setting) once over ``max_bytes``."""
        announced = response.headers.get("content-length", "")
        if announced.isdigit() and int(announced) > max_bytes:
            raise over_limit(url, int(announced), max_bytes, field)
        body = bytearray()
        for block in self.iter_bytes(response, url):
            body += block
            if len(body) > max_bytes:
                raise over_limit(url, None, max_bytes, field)
        return bytes(body)


def over_limit(url: str, size: int | None, max_bytes: int, field: str) -> FetchError:
    """The error for a body over a size limit (``size`` None: counted, not announced)."""
    what = f"{size} bytes" if size is not None else f"more than {max_bytes} bytes"
    return FetchError(
        f"cannot fetch {url}: {what}, over the limit of {max_bytes} bytes "
        f"(raise {setting_name(field)} if this is expected)"
    )
