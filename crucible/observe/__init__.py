"""Observability at the lowest layer: structured log events (``logs``) and Prometheus metric
definitions (``metrics``). Nothing here configures anything on import; entry points call
``configure_logging`` once and each app owns its own ``CollectorRegistry``."""
