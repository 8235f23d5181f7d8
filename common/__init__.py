"""What both daemons stand on: HTTP serving with the web config, settings, logging, backoff.

Nothing here imports ``exporter`` or ``audit``; both import this.
"""

__version__ = "0.1.0"
