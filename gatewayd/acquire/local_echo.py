"""A local-echo RS-485 adapter's echo, taken off the line before the line's books see it.

Why: a 2-wire adapter whose receiver stays on hands every request straight back. Booked as line
traffic the echo is noise that makes every answer doubtful, and some requests (coils 768+17)
even parse as a whole answer. With `modbus.local_echo = true` the request's bytes, when they come
first in the request's window, are removed; anything else is left for the ledger to judge (bytes
held as a possible echo are handed on the moment they stop matching; only an echo cut short
is never handed on).
Without the key the echo is only noticed, so a refused read can say which key to set.
"""

from __future__ import annotations


class EchoWatch:
    """The echo of the request in flight: stripped (`strip`) or only noticed."""

    def __init__(self, strip: bool) -> None:
        self.strip = strip
        self._due = b""  # the request's bytes not yet seen back
        self._held = b""  # bytes held back as the echo's beginning
        #: Requests handed back so far (once, the line echoes: an adapter does so always).
        self.echoes = 0

    def begin(self, request: bytes) -> None:
        """A request goes out: its bytes are what an echo would be."""
        self._due, self._held = request, b""

    def feed(self, data: bytes) -> bytes:
        """The bytes the line's books should see."""
        if not self._due:
            return data
        if data.startswith(self._due):
            rest = data[len(self._due) :]
            self._due, self._held = b"", b""
            self.echoes += 1
            return rest if self.strip else data
        if self._due.startswith(data):
            self._due = self._due[len(data) :]
            if self.strip:
                self._held += data
                return b""
            return data
        held, self._due, self._held = self._held, b"", b""
        return held + data
