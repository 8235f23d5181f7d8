"""tee-exporter: Prometheus exporter for confidential-computing hosts."""
