from __future__ import annotations

from aigw.providers.sse import SSEDecoder, SSEEvent


def test_events_split_across_reads_and_line_endings() -> None:
    decoder = SSEDecoder()
    stream = (
        b'event: a\r\ndata: {"x":1}\r\n\r\n: comment\n\n'
        b"data: line1\ndata: line2\n\ndata: [DONE]\n\n"
    )
    events = []
    for i in range(0, len(stream), 3):
        events += decoder.feed(stream[i : i + 3])
    assert events == [
        SSEEvent("a", b'{"x":1}'),
        SSEEvent(None, b"line1\nline2"),
        SSEEvent(None, b"[DONE]"),
    ]
    assert decoder.pending == b""


def test_incomplete_event_is_kept() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: par") == []
    assert decoder.feed(b"tial\n\n") == [SSEEvent(None, b"partial")]
