"""The address policy: which destinations a fetch may reach, and why the others are refused.

Refused: addresses that are not public unicast (unless a setting allows loopback or private
ranges), and any URL that carries credentials (``user:password@host``).

Pure functions of an address or a URL (plus ``resolve_host``, the one lookup), so the policy
is testable offline and the API can apply it at submit time, before anything is queued. The
transport applies the same functions again at connect time, hop by hop.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence

import httpx

from asyncml.errors import FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[IPAddress]]

# The settings that allow each refused class: ASYNCML_FETCH_* for downloads, and the group a
# caller names (ASYNCML_WEBHOOK_* for callbacks), so the hint names the setting that governs.
_LOOPBACK_HINT = "set {prefix}_ALLOW_LOOPBACK=true to allow"
_PRIVATE_HINT = "set {prefix}_ALLOW_PRIVATE=true to allow"
FETCH_SETTINGS = "ASYNCML_FETCH"
# "This network": Linux routes 0.0.0.0 to the local host, and nothing else in 0/8 is reachable.
_THIS_NETWORK = ipaddress.IPv4Network("0.0.0.0/8")
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")
_UNIQUE_LOCAL = ipaddress.IPv6Network("fc00::/7")


def _refusal(
    ip: IPAddress, *, allow_loopback: bool, allow_private: bool, settings: str = FETCH_SETTINGS
) -> str | None:
    """Why ``ip`` is refused (with the setting that would allow it), or None if allowed.

    The order matters: Python counts ``::1`` as reserved and ``127.0.0.1`` as private, so
    loopback is decided before either.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        # ::ffff:10.0.0.1 reaches 10.0.0.1 on a dual-stack socket: judge the IPv4 inside.
        if ip.ipv4_mapped is not None:
            return _refusal(
                ip.ipv4_mapped,
                allow_loopback=allow_loopback,
                allow_private=allow_private,
                settings=settings,
            )
        if ip.sixtofour is not None:
            inner = _refusal(
                ip.sixtofour,
                allow_loopback=allow_loopback,
                allow_private=allow_private,
                settings=settings,
            )
            if inner is not None:
                return f"6to4 address embedding a {inner}"
    if ip.is_unspecified:
        return "unspecified address; never allowed"
    if isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK:
        return "'this network' address (0.0.0.0/8); never allowed"
    if ip.is_multicast:
        return "multicast address; never allowed"
    if ip.is_loopback:
        hint = _LOOPBACK_HINT.format(prefix=settings)
        return None if allow_loopback else f"loopback address; {hint}"
    if ip.is_reserved:
        return "reserved address; never allowed"
    # fec0::/10 was deprecated (RFC 3879) without being reassigned, so Python calls it global;
    # networks that still route it use it as private space.
    site_local = isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local
    if ip.is_global and not site_local:
        return None
    if allow_private:
        return None
    if ip.is_link_local:
        kind = "link-local address"
    elif site_local:
        kind = "site-local address"
    elif isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_ADDRESS_SPACE:
        kind = "shared (CGNAT) address"
    elif isinstance(ip, ipaddress.IPv6Address) and ip in _UNIQUE_LOCAL:
        kind = "unique local address"
    else:
        kind = "private address"
    return f"{kind}; {_PRIVATE_HINT.format(prefix=settings)}"


def address_allowed(ip: IPAddress, *, allow_loopback: bool, allow_private: bool) -> bool:
    """Whether the guard lets a fetch connect to ``ip``; pure, so the policy is testable offline.

    Public global unicast is allowed; loopback only with ``allow_loopback``; private,
    link-local, unique-local, site-local (fec0::/10), CGNAT and other non-global unicast only
    with ``allow_private``;
    unspecified, multicast and reserved never. IPv4-mapped IPv6 is judged as its IPv4.
    """
    return _refusal(ip, allow_loopback=allow_loopback, allow_private=allow_private) is None


def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in resolver order, without duplicates.

    ``getaddrinfo`` takes no timeout, so ``total_timeout_s`` cannot cut a slow lookup short (it
    only refuses to start the connection afterwards). The system resolver's own timeout and
    retries (``resolv.conf``) end the lookup, and the task's time limit bounds the task: the
    soft limit's exception is raised once ``getaddrinfo`` returns, the hard limit kills the
    worker process regardless.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host}: {exc}") from exc
    found: list[IPAddress] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]))
        if ip not in found:
            found.append(ip)
    return found


def _is_literal(host: str, ip: IPAddress) -> bool:
    """Whether the URL named ``ip`` itself rather than a hostname (for a clearer message)."""
    try:
        return ipaddress.ip_address(host.strip("[]")) == ip
    except ValueError:
        return False


def _with_article(reason: str) -> str:
    """``reason`` read as "a private address" / "an unspecified address"."""
    return f"an {reason}" if reason.startswith("unspecified") else f"a {reason}"


CREDENTIALS_RULE = (
    "URLs with credentials (user:password@host) are refused: the service never forwards them"
)


def credentials_refusal(url: httpx.URL) -> str | None:
    """Why a URL that carries userinfo is refused, else None.

    httpx turns ``user:password@`` into an ``Authorization: Basic`` header, so such a URL
    would send its credentials to whatever host it names, or a redirect hop names. The
    reason never repeats the credentials.
    """
    return f"refusing {_redact(url)}: {CREDENTIALS_RULE}" if url.userinfo else None


def literal_refusal(
    url: str, *, allow_loopback: bool, allow_private: bool, settings: str = FETCH_SETTINGS
) -> str | None:
    """Why a URL is refused before any lookup, else None: it carries credentials, or its host
    is an IP literal the policy refuses. Names are judged at connect time, after resolution.
    ``settings`` is the prefix of the settings that would allow it, named in the reason.

    The submit-time check of every URL the service fetches or calls, so a refusal is a 422
    before anything is queued; the Fetcher applies the same rules to every hop again.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return None
    refused = credentials_refusal(parsed)
    if refused is not None:
        return refused
    try:
        ip = ipaddress.ip_address(parsed.host)
    except ValueError:
        return None
    reason = _refusal(
        ip, allow_loopback=allow_loopback, allow_private=allow_private, settings=settings
    )
    return None if reason is None else f"refusing {ip}: {_with_article(reason)}"


def origin(url: str) -> str:
    """scheme://host:port only: a webhook URL's path or query may hold its token."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


def _parse_url(url: str) -> httpx.URL:
    try:
        return httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchError(f"invalid URL {_redact(url)}: {exc}") from exc


def _redact(url: httpx.URL | str) -> str:
    """The URL without userinfo: error bodies and logs must not carry credentials."""
    try:
        parsed = url if isinstance(url, httpx.URL) else httpx.URL(url)
        return str(parsed.copy_with(userinfo=b""))
    except (httpx.InvalidURL, TypeError, ValueError):
        return "<invalid URL>"
