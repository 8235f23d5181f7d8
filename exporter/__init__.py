"""tee-exporter: Prometheus exporter for confidential-computing hosts."""

__version__ = "0.1.0"
