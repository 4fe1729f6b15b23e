"""ostinato: real-time audio stream processor (CLI and network service).

The libraries live in :mod:`ostinato.stream`, :mod:`ostinato.runtime` and
:mod:`ostinato.export`; this top-level package holds the command line and the service.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
