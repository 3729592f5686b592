"""SSE framing and the tally: events pass through byte for byte, cut only at event
boundaries; usage, errors and [DONE] are found wherever they sit."""

from __future__ import annotations

import orjson

from functions.services.inference.requests import with_upstream_usage
from functions.services.inference.sse import EventSplitter, StreamTally, has_data, payloads


def event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


CHUNK = event({"choices": [{"delta": {"content": "hi"}}], "usage": None})
USAGE = event({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
DONE = b"data: [DONE]\n\n"


def test_splitter_cuts_at_event_boundaries_across_reads() -> None:
    splitter = EventSplitter()
    whole = CHUNK + b": keep-alive\n\n" + CHUNK
    assert splitter.feed(whole[:10]) == b""
    assert splitter.feed(whole[10:-5]) == CHUNK + b": keep-alive\n\n"
    assert splitter.feed(whole[-5:]) == CHUNK
    assert splitter.pending == b""
    crlf = EventSplitter().feed(b"data: {}\r\n\r\ndata: x\r")
    assert crlf == b"data: {}\n\n"
    assert not has_data(b": ping\n\n") and has_data(b": ping\n\ndata: {}\n\n")
    assert payloads(b"event: x\ndata: a\ndata: b\n\n: c\n\ndata:d\n\n") == [b"a\nb", b"d"]


def test_plain_chunks_pass_through_untouched() -> None:
    tally = StreamTally(keep_usage_chunk=False)
    block = CHUNK * 3 + b": comment\n\n"
    assert tally.render(block) is block
    assert tally.usage is None and not tally.done


def test_usage_chunk_is_read_and_dropped_unless_asked() -> None:
    tally = StreamTally(keep_usage_chunk=False)
    assert tally.render(CHUNK + USAGE + DONE + CHUNK) == CHUNK + DONE
    assert tally.usage == {"prompt_tokens": 3, "completion_tokens": 2} and tally.done
    kept = StreamTally(keep_usage_chunk=True)
    spaced = b'data: {"choices": [], "usage": {"prompt_tokens": 1}}\n\n'
    assert kept.render(spaced + b"data:[DONE]\n\n") == spaced + DONE
    assert kept.usage == {"prompt_tokens": 1}


def test_errors_and_lookalikes() -> None:
    tally = StreamTally(keep_usage_chunk=False)
    text = event({"choices": [{"delta": {"content": 'say "error" and [DONE]'}}]})
    assert tally.render(text) == text and not tally.error and not tally.done
    failed = event({"error": {"message": "engine died"}})
    assert tally.render(failed) == failed and tally.error


def test_usage_is_asked_for_without_reencoding_the_body() -> None:
    raw = b'{"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": true}\n'
    body = orjson.loads(raw)
    sent, keep = with_upstream_usage(body, raw)
    assert sent.startswith(raw.rstrip()[:-1]) and not keep
    assert orjson.loads(sent) == {**body, "stream_options": {"include_usage": True}}
    asked = {**body, "stream_options": {"include_usage": True}}
    raw_asked = orjson.dumps(asked)
    assert with_upstream_usage(asked, raw_asked) == (raw_asked, True)
    other = {**body, "stream_options": {"continuous_usage_stats": True}}
    sent, keep = with_upstream_usage(other, orjson.dumps(other))
    assert orjson.loads(sent)["stream_options"] == {
        "continuous_usage_stats": True,
        "include_usage": True,
    }
