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
