"""Bundled demo data: a libvirt test-driver node file (``testnode.xml``) of plain and confidential domains."""
