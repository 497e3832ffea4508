"""The parent side of minicog: the orchestrator, prediction records, HTTP front-end.

Kept import-light on purpose: nothing is re-exported here, so importing one
submodule (``minicog.server.orchestrator`` for an embedder, say) does not pull
in the HTTP server and vice versa.  Import the submodules you need.
"""

__all__: list = []
