"""Unit tests: no brokers, no network; safe under pytest-xdist."""
