"""Session-wide fixtures for the real components. Each lives in its own module under tests/fixtures/."""

pytest_plugins = [
    "tests.fixtures.libvirtd",
    "tests.fixtures.elasticsearch",
    "tests.fixtures.elasticsearch8",
    "tests.fixtures.elasticsearch_secure",
    "tests.fixtures.elasticsearch_cluster",
    "tests.fixtures.prometheus",
    "tests.fixtures.litewitness",
]


def pytest_configure() -> None:
    # Both daemons switch prometheus_client's *_created series off when they build their registry, and that switch
    # is process-wide: set it before any test, so every exposition a test sees is the one users scrape, whichever
    # test happened to build a registry first.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()
