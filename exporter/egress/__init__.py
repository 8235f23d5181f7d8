"""Egress observation for confidential guests: which guest starts which flow, judged against the policy's
``runtime_policy.network_policy``.

``rules`` judges a destination address (pure), ``conntrack`` reads the host's connection-tracking events,
``guests`` finds each confidential guest's addresses, and ``exporter.collectors.egress`` ties them together.
"""
