"""The collectors, one module per source, each switchable with ``--collector.<name>``/``--no-collector.<name>``
(the table is ``exporter.config.COLLECTORS``).

Modules are imported only when their collector is enabled, so a host without libvirt-python can still run the
attestation collectors, and vice versa.
"""

from exporter.config import COLLECTORS as SPECS

__all__ = ["SPECS"]
