"""libvirt plumbing shared by the libvirt, host and lifecycle collectors: the connection and pure XML parsing.

Named ``virt`` rather than ``libvirt`` so that ``import libvirt`` inside the package is never shadowed.
"""
