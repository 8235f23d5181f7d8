"""``python -m audit`` is ``tee-audit``."""

from audit.cli import main

main()
