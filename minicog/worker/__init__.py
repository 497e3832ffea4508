"""The worker subprocess: runs the model, routes its output, obeys cancel.

The parent (:mod:`minicog.engine`) starts it as
``python -m minicog.worker --control FD --slots FD,...``; see
:mod:`minicog.worker.main` for the threads and the run loop,
:mod:`minicog.worker.logs` for output capture, :mod:`minicog.worker.cancel`
for SIGUSR1 cancellation, :mod:`minicog.worker.inputs` and
:mod:`minicog.worker.outputs` for payloads, and :mod:`minicog.protocol` for
the messages.  Importing this package has no side effects.
"""

__all__: list = []
