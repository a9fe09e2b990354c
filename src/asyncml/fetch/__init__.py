"""SSRF-guarded fetching of user-supplied URLs.

A task's input URL is chosen by whoever calls the API, so the worker must not become a way to
reach the metadata service, the broker or anything else on the private network. The rooms:

* ``_policy``: which addresses and URLs are refused and why (pure; also used at submit time):
  addresses that are not public unicast unless a setting allows them, and URLs that carry
  credentials;
* ``_transport``: the httpx transport that resolves, checks and dials only checked addresses,
  with every socket wait clamped to the deadline;
* ``_fetcher``: ``Fetcher`` (download, get, post) with redirects, caps and readable errors;
* ``_deadline``: the deadline of a call, and ``FetchBudget``, the one deadline shared by
  every request of a task.
"""

from asyncml.fetch._deadline import FetchBudget
from asyncml.fetch._fetcher import Downloaded, Fetched, Fetcher
from asyncml.fetch._policy import (
    IPAddress,
    Resolver,
    _redact,
    address_allowed,
    literal_refusal,
    origin,
    resolve_host,
)

__all__ = [
    "Downloaded",
    "FetchBudget",
    "Fetched",
    "Fetcher",
    "IPAddress",
    "Resolver",
    "_redact",
    "address_allowed",
    "literal_refusal",
    "origin",
    "resolve_host",
]
