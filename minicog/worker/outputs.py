"""Sending a prediction's output items to the parent.

Each item (the return value, each element of a returned list/tuple, each
yielded item) becomes one message on the prediction's slot:

* ``os.PathLike`` → ``file`` with the absolute path and a guessed mime type;
  the parent reads the file where it is.
* a file object (``io.IOBase``) → written by :func:`minicog.encoding.write_iobase`
  into the prediction's ``outputs/`` folder, then sent as a ``file``.
* anything else → :func:`minicog.encoding.make_encodeable`,
  :func:`minicog.encoding.encode_files` (nested files become ``data:`` URIs) and
  :func:`minicog.encoding.dumps` (which raises :class:`minicog.errors.OutputError`
  naming an unserialisable type, NaN included).  If the JSON text is larger
  than ``max_inline`` bytes it is written to ``outputs/spill_<index>.json`` and
  sent as ``output_file`` (the parent reads and deletes it); otherwise it is
  spliced into the ``output`` frame as is, so it is serialised once.

``index`` counts items from 0 per prediction.  A single ``None`` output sends
nothing (the parent then reports ``null``), as Cog.  A sync prediction's single
(non-stream) output that goes inline rides in its ``done`` message instead (see
:mod:`minicog.protocol`): one frame less to write and to read.
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Optional

from minicog import protocol

__all__ = ["OutputSender", "output_frame"]

_PLAIN = frozenset({str, int, bool})
#: The JSON text of a plain value, as minicog.encoding.dumps writes it.  Plain values need
#: neither minicog.encoding nor minicog.files, which are imported (with urllib, http.client
#: and mimetypes: megabytes of a worker's memory) only once a model sends something else.
_PLAIN_JSON = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class OutputSender:
    def __init__(self, channel: protocol.Channel, outputs_dir: Optional[str], max_inline: int,
                 before_send: Optional[Callable[[], None]] = None):
        self.channel = channel
        #: Called before each item is sent (the prediction's batched log lines go first).
        self.before_send = before_send
        self.outputs_dir = outputs_dir
        self.max_inline = max_inline
        self.index = 0
        #: True once the outputs folder was asked for (it, and the prediction's folder, may exist).
        self.made_dir = False
        #: Set by the caller before a sync prediction's only item: that item, if it goes
        #: inline, is kept (:meth:`take_kept`) to ride in the terminal ``done`` message.
        self.keep_single = False
        self._kept: Optional[bytes] = None

    def _dir(self) -> str:
        if not self.outputs_dir:
            raise OSError("this prediction has no output folder")
        self.made_dir = True
        os.makedirs(self.outputs_dir, exist_ok=True)
        return self.outputs_dir

    def send(self, item: Any) -> None:
        """Send one output item (see the module docstring)."""
        index = self.index
        if self.before_send is not None:
            self.before_send()
        if type(item) in _PLAIN:
            # A str, int or bool is its own JSON value (and never a file): the common
            # case goes first, before the imports and the two ABC checks below.
            self._send_text(index, _PLAIN_JSON.encode(item))
            self.index += 1
            return
        from minicog import encoding, files
        from minicog.errors import OutputError

        if isinstance(item, os.PathLike):
            path = os.path.abspath(os.fspath(item))
            self.channel.send({"type": "file", "index": index, "path": path, "mime": files.guess_mime(path)})
        elif encoding.is_file_like(item):
            path = os.path.abspath(encoding.write_iobase(item, self._dir(), index))
            self.channel.send({"type": "file", "index": index, "path": path, "mime": files.guess_mime(path)})
        else:
            try:
                value = encoding.encode_files(encoding.make_encodeable(item))
            except RecursionError:
                raise OutputError("Failed to serialize output: the value is nested too deeply (or contains itself)") from None
            self._send_text(index, encoding.dumps(value))
        self.index += 1

    def _send_text(self, index: int, text: str) -> None:
        """Send item *index*, already JSON: inline, or spilled to a file when too big."""
        data = text.encode("utf-8")
        if len(data) > self.max_inline:
            path = os.path.join(self._dir(), f"spill_{index}.json")
            with open(path, "wb") as f:
                f.write(data)
            self.channel.send({"type": "output_file", "index": index, "path": path})
        elif self.keep_single and index == 0:
            self._kept = data
        else:
            self.channel.send_raw(output_frame(index, data))

    def take_kept(self) -> Optional[bytes]:
        """The kept single item's JSON (see ``keep_single``), once; None if none was kept."""
        data, self._kept = self._kept, None
        return data


def output_frame(index: int, data: bytes) -> bytes:
    """The ``output`` message for item *index* whose JSON is *data*, spliced in as is."""
    head = protocol.dumps({"type": "output", "index": index})
    return head[:-1] + b',"value":' + data + b"}"
