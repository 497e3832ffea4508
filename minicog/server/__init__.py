"""HTTP serving: prediction records, SSE, webhooks, outputs and the service.

The engine (the parent side of the worker protocol) is :mod:`minicog.engine`;
``minicog.server.orchestrator`` only re-exports it for older imports.  Nothing
is re-exported here, so importing one submodule does not pull in the HTTP
server.  Map and contracts: docs/architecture.rst.
"""

__all__: list = []
