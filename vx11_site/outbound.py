"""The one guard of every request the portal makes: fleet probes, flows, http daughters, operator
upstreams, webhooks, the power manager's health waits.

Any read-write API key may register a module, so a module's address (and a webhook's URL) is user
input: unguarded, the portal would fetch http://169.254.169.254/ (cloud metadata) or 127.0.0.1:5432
for whoever asks and hand the answer back in a daughter's body or a flow step's excerpt. Policy:

- the scheme is http or https;
- every address the host resolves to is covered by VX11_OUTBOUND_ALLOW (CIDRs, or host names allowed
  by name) and by no entry of VX11_OUTBOUND_DENY (CIDRs or host names); deny wins over allow. One
  refused address refuses the host: a name that resolves to a fleet address and to the metadata
  address is not a fleet module.

It is enforced where the connection is made, inside the clients, so no call site can skip it and a
redirect hop is checked like the first request. Callers do not follow redirects anyway (a module
answering 3xx is misconfigured and is reported as such; following would also spend its time budget twice).

- httpx (`client()`): the transport's network backend resolves the host itself, checks every address
  and connects to a checked address. The name is never resolved again, so DNS rebinding cannot swap
  the address between check and connect; TLS still verifies the certificate against the name.
- aiohttp (`aiohttp_session()`): the connector's resolver checks what a name resolves to (aiohttp
  connects to exactly those addresses), and its socket factory checks the address of every socket it
  opens, which covers IP literals (aiohttp never hands those to the resolver).

`check_url` is the same policy at save time (module base URLs, webhook URLs): a refused target is a 422
there. A name that does not resolve yet passes at save time; it is checked when a request resolves it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import aiohttp
import httpcore
import httpx
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

SCHEMES = ("http", "https")
HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9])?)*$")
PREFIX = "outbound request refused"

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class Refused(OSError):
    """The policy refuses the target. An OSError, so aiohttp reports it as the connection error it is."""


def normal_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def ip(value: str) -> Address | None:
    """The address `value` names, IPv4-mapped IPv6 as the IPv4 address it reaches; None for a host name."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped:  # ::ffff:169.254.169.254 reaches 169.254.169.254
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class Rules:
    """One setting's entries: networks and host names."""

    setting: str
    networks: tuple
    names: frozenset

    @classmethod
    def parse(cls, setting: str, entries) -> Rules:
        networks, names = [], set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
                continue
            except ValueError:
                pass
            name = normal_host(entry)
            if not HOST_NAME.match(name):
                raise ImproperlyConfigured(f"{setting}: {entry!r} is neither a CIDR nor a host name")
            names.add(name)
        return cls(setting, tuple(networks), frozenset(names))

    def entry_for(self, host: str, address: Address) -> str | None:
        """The entry covering this host name or address, or None."""
        if host in self.names:
            return host
        for network in self.networks:
            if network.version == address.version and address in network:
                return str(network)
        return None


@lru_cache(maxsize=8)
def _rules(allow: tuple, deny: tuple) -> tuple[Rules, Rules]:
    return Rules.parse("VX11_OUTBOUND_ALLOW", allow), Rules.parse("VX11_OUTBOUND_DENY", deny)


def rules() -> tuple[Rules, Rules]:
    """(allow, deny) as the settings say now (tests override them)."""
    return _rules(tuple(settings.VX11_OUTBOUND_ALLOW), tuple(settings.VX11_OUTBOUND_DENY))


def refusal(host: str, address: str) -> str | None:
    """Why connecting to `address` for `host` (the URL's host name, or the address itself) is refused;
    None if allowed."""
    allow, deny = rules()
    host, checked = normal_host(host), ip(normal_host(address))
    if checked is None:
        return f"{PREFIX}: {address!r} is not an IP address"
    shown = host if ip(host) == checked else f"{host} ({checked})"
    entry = deny.entry_for(host, checked)
    if entry is not None:
        return f"{PREFIX}: {shown} is in VX11_OUTBOUND_DENY ({entry})"
    if allow.entry_for(host, checked) is None:
        return f"{PREFIX}: {shown} is not in VX11_OUTBOUND_ALLOW"
    return None


def check_address(host: str, address: str) -> None:
    reason = refusal(host, address)
    if reason:
        raise Refused(reason)


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` stands for (itself when it is an IP literal), in the resolver's order."""
    literal = normal_host(host)
    if ip(literal) is not None:
        return [literal]
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def checked_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, each allowed; Refused otherwise (socket.gaierror if it does not resolve)."""
    _, deny = rules()
    if normal_host(host) in deny.names:  # refused by name, wherever it points
        raise Refused(f"{PREFIX}: {normal_host(host)} is in VX11_OUTBOUND_DENY")
    addresses = resolve(host, port)
    for address in addresses:
        check_address(host, address)
    return addresses


def check_scheme(scheme: str) -> None:
    if scheme.lower() not in SCHEMES:
        raise Refused(f"{PREFIX}: scheme {scheme!r} is not http or https")


def check_url(url: str) -> None:
    """The policy at save time: Refused when `url` may not be requested."""
    parts = urlsplit(url)
    check_scheme(parts.scheme)
    if not parts.hostname:
        raise Refused(f"{PREFIX}: {url!r} has no host")
    try:
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise Refused(f"{PREFIX}: {url!r} has no valid port") from None
    try:
        checked_addresses(parts.hostname, port)
    except socket.gaierror:
        pass  # checked when a request resolves it


def why(exc: BaseException) -> str | None:
    """The policy's reason when `exc` (or what caused it) is a refusal; None for any other failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Refused) or str(exc).startswith(PREFIX):
            return str(exc)
        seen.add(id(exc))
        exc = getattr(exc, "os_error", None) or exc.__cause__ or exc.__context__
    return None


# -- httpx ---------------------------------------------------------------------------------------


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend, connecting only to checked addresses."""

    def __init__(self, backend: httpcore.NetworkBackend):
        self.backend = backend

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        try:
            addresses = checked_addresses(host, port)
        except OSError as exc:  # refused, or the name does not resolve
            raise httpcore.ConnectError(str(exc)) from exc
        failure = None
        for address in addresses:  # as socket.create_connection: the next address when one fails
            try:
                return self.backend.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure

    def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise httpcore.ConnectError(f"{PREFIX}: unix socket {path}")

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


class GuardedTransport(httpx.HTTPTransport):
    """httpx's transport with every connection checked; no proxy from the environment (it would be
    the proxy's address that is checked, not the target's)."""

    def __init__(self, **kwargs):
        super().__init__(trust_env=False, **kwargs)
        # httpx takes no network backend, and the pool's is the one place that knows the address connected to
        self._pool._network_backend = _GuardedBackend(self._pool._network_backend)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in SCHEMES:
            raise httpx.UnsupportedProtocol(
                f"{PREFIX}: scheme {request.url.scheme!r} is not http or https", request=request
            )
        return super().handle_request(request)


def client(**kwargs) -> httpx.Client:
    """An httpx.Client whose every connection passes the policy; redirects are not followed unless asked."""
    kwargs.setdefault("follow_redirects", False)
    return httpx.Client(transport=GuardedTransport(), trust_env=False, **kwargs)


# -- aiohttp -------------------------------------------------------------------------------------


class _GuardedResolver(aiohttp.abc.AbstractResolver):
    """aiohttp's resolver, refusing a name with any address outside the policy; the socket factory
    checks the rest (IP literals skip the resolver)."""

    def __init__(self):
        self.resolver = aiohttp.resolver.DefaultResolver()
        self.vetted: set[str] = set()  # addresses allowed for the name they came from (a name in VX11_OUTBOUND_ALLOW)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        _, deny = rules()
        if normal_host(host) in deny.names:
            raise Refused(f"{PREFIX}: {normal_host(host)} is in VX11_OUTBOUND_DENY")
        results = await self.resolver.resolve(host, port, family)
        for result in results:
            check_address(host, result["host"])
        self.vetted.update(str(ip(result["host"])) for result in results)
        return results

    async def close(self) -> None:
        await self.resolver.close()

    def socket(self, addr_info) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        address = str(ip(sockaddr[0]))
        if address not in self.vetted:
            check_address(address, address)
        return socket.socket(family=family, type=type_, proto=proto)


async def _check_scheme(session, context, params) -> None:
    check_scheme(params.url.scheme)


def aiohttp_session(connector: dict | None = None, **kwargs) -> aiohttp.ClientSession:
    """An aiohttp.ClientSession whose every connection passes the policy (create it inside the event loop)."""
    resolver = _GuardedResolver()
    tcp = aiohttp.TCPConnector(resolver=resolver, socket_factory=resolver.socket, **(connector or {}))
    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(_check_scheme)
    return aiohttp.ClientSession(connector=tcp, trace_configs=[trace], trust_env=False, **kwargs)
