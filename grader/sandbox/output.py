"""A run's merged output, read as it comes: step markers out, head and tail kept."""

from __future__ import annotations

from collections import deque

# A line that starts with this marks a step: the watch restarts its step clock.
STEP_MARKER = "\x1e@step "
MARK = STEP_MARKER.encode()
# Steps kept, and the length of one step's payload.
_MAX_STEPS = 10_000
_MAX_STEP_BYTES = 4096
# Room kept in Result.output for the note that says output was dropped.
_NOTE_ROOM = 200


class Output:
    """Collect merged output incrementally: steps out, head and tail kept, middle dropped."""

    def __init__(self, limit: int):
        room = max(0, limit - _NOTE_ROOM) if limit > 4 * _NOTE_ROOM else limit
        self.head_cap = room * 3 // 4
        self.tail_cap = room - self.head_cap
        self.limit = limit
        self.head = bytearray()
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.dropped = 0
        self.pending = bytearray()  # bytes that may be the start of a marker line
        self.skipping = False  # inside a too-long marker line: discard to its newline
        self.steps: list[str] = []
        self.markers = 0  # markers seen (also those past _MAX_STEPS)

    def _emit(self, data: bytes) -> None:
        if not data:
            return
        take = min(len(data), self.head_cap - len(self.head))
        if take > 0:
            self.head += data[:take]
            data = data[take:]
        if not data:
            return
        self.tail.append(bytes(data))
        self.tail_len += len(data)
        while self.tail and self.tail_len - len(self.tail[0]) >= self.tail_cap:
            self.dropped += len(self.tail[0])
            self.tail_len -= len(self.tail[0])
            self.tail.popleft()

    def _step(self, payload: bytes) -> None:
        self.markers += 1
        if len(self.steps) < _MAX_STEPS:
            text = payload[:_MAX_STEP_BYTES].decode(errors="replace").rstrip("\r")
            self.steps.append(text)

    def feed(self, data: bytes) -> None:
        buf = self.pending + data
        self.pending = bytearray()
        pos = 0
        while pos < len(buf):
            if self.skipping:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    return
                self.skipping = False
                pos = nl + 1
                continue
            m = buf.find(MARK, pos)
            if m < 0:
                # Keep a tail that could be the start of a marker split across reads.
                cut = len(buf)
                r = buf.rfind(MARK[:1], max(pos, len(buf) - len(MARK) + 1))
                if r >= 0 and MARK.startswith(bytes(buf[r:])):
                    cut = r
                self._emit(bytes(buf[pos:cut]))
                self.pending = bytearray(buf[cut:])
                return
            self._emit(bytes(buf[pos:m]))
            nl = buf.find(b"\n", m)
            if nl < 0:
                if len(buf) - m > len(MARK) + _MAX_STEP_BYTES:
                    self._step(bytes(buf[m + len(MARK) :]))
                    self.skipping = True
                else:
                    self.pending = bytearray(buf[m:])
                return
            self._step(bytes(buf[m + len(MARK) : nl]))
            pos = nl + 1

    def finish(self) -> None:
        if self.pending:
            if self.pending.startswith(MARK):
                self._step(bytes(self.pending[len(MARK) :]))
            else:
                self._emit(bytes(self.pending))
            self.pending = bytearray()

    def text(self) -> str:
        tail = b"".join(self.tail)
        if len(tail) > self.tail_cap:
            self.dropped += len(tail) - self.tail_cap
            tail = tail[len(tail) - self.tail_cap :]
            self.tail = deque([tail])
            self.tail_len = len(tail)
        out = bytes(self.head)
        if self.dropped:
            note = (
                f"\n[... {self.dropped} bytes of output dropped here: the sandbox keeps "
                f"{self.limit} bytes ...]\n"
            )
            out += note.encode()
        out += tail
        return out.decode(errors="replace")
