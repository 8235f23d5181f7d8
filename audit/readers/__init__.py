"""Storage adapters for ``tee-audit verify``: they turn what a store holds into records and findings."""
