"""Host TEE platform sources read from the kernel (sysfs, procfs, devfs, the misc cgroup) and local services.

One module per source. Parsing functions are pure (text or bytes in, values out); the ``read_*`` functions take
the filesystem roots (``--path.sysfs``, ``--path.procfs``, ``--path.devfs``, ``--path.cgroupfs``) so that every
source is tested against fixture trees. A missing file means "not present": no series, no error. A file that is
present but does not parse is reported to ``Problems``: counted and logged once.
"""
