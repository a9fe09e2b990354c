"""The test suite: unit tests (no brokers) and integration tests (real services), one package so
that `pytest` from the root collects both folders despite test files of the same name."""
