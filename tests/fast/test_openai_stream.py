"""Tests of the one streamed-completion parser and connection (ServerClient and loadgen share).

CompletionStream and StreamConnection: split reads, [DONE], usage-only chunks, error events and
lines that are not JSON.
"""

import json
import socket
import threading

import pytest

from thrifty.formats.openai_api import CompletionStream, ServerClient, ServerError, StreamConnection

pytestmark = pytest.mark.timeout(30)


def event(payload) -> bytes:
    return b"data: " + (payload if isinstance(payload, bytes) else json.dumps(payload).encode()) \
        + b"\n\n"


def token(text: str) -> bytes:
    return event({"object": "text_completion", "choices": [{"index": 0, "text": text}]})


USAGE = event({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}})
STREAM = token("a") + token("b") + token("c") + USAGE + event(b"[DONE]")


def parse(pieces: list[bytes]) -> CompletionStream:
    """Feed each piece at time 1, 2, 3, ... (a fake clock: no wall-clock times)."""
    stream = CompletionStream(started_s=0.5)
    for index, piece in enumerate(pieces):
        stream.feed(piece, float(index + 1))
    stream.finish(float(len(pieces) + 1))
    return stream


def test_one_event_per_read():
    stream = parse([token("a"), token("b"), token("c"), USAGE, event(b"[DONE]")])
    assert stream.ok and stream.error is None and stream.done
    assert stream.text == "abc" and stream.chunks == 3
    assert stream.output_tokens == 3 and stream.input_tokens == 7
    assert stream.ttft_s == 0.5 and stream.itl_s == [1.0, 1.0]
    assert stream.e2e_s == 5.5


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64])
def test_events_split_across_reads_parse_the_same(size):
    pieces = [STREAM[i:i + size] for i in range(0, len(STREAM), size)]
    stream = parse(pieces)
    assert stream.ok and stream.text == "abc" and stream.chunks == 3
    assert stream.output_tokens == 3 and stream.input_tokens == 7
    # each chunk is timed by the read that completed its line
    ends = [STREAM.index(token(t)) + len(token(t)) - 2 for t in "abc"]
    assert stream.chunk_times_s == [float(end // size + 1) for end in ends]


def test_several_events_in_one_read_share_its_time():
    stream = parse([STREAM])
    assert stream.ok and stream.chunk_times_s == [1.0, 1.0, 1.0] and stream.itl_s == [0.0, 0.0]


def test_crlf_lines_comments_and_other_fields_are_ignored():
    raw = b": keep-alive\r\n\r\nevent: completion\r\nid: 1\r\n" + STREAM.replace(b"\n", b"\r\n")
    stream = parse([raw])
    assert stream.ok and stream.text == "abc" and stream.output_tokens == 3


def test_nothing_after_done_is_parsed():
    stream = parse([token("a") + event(b"[DONE]") + token("late") + b"data: not json\n\n"])
    assert stream.ok and stream.text == "a" and stream.chunks == 1


def test_usage_only_chunk_is_not_a_token():
    stream = parse([token("a"), USAGE, event(b"[DONE]")])
    assert stream.ok and stream.chunks == 1 and stream.chunk_times_s == [1.0]
    assert stream.output_tokens == 3 and stream.input_tokens == 7


def test_without_usage_the_chunks_are_counted():
    stream = parse([token("a"), token(""), event(b"[DONE]")])
    assert stream.ok and stream.chunks == 2 and stream.output_tokens == 2 and stream.text == "a"
    assert stream.input_tokens is None


def test_error_event_fails_the_stream():
    error = {"error": {"object": "error", "message": "out of memory", "type": "InternalError",
                       "code": 500}}
    stream = parse([token("a"), event(error), event(b"[DONE]")])
    assert not stream.ok and stream.done and stream.chunks == 1
    assert stream.error == "the server sent an error mid-stream: out of memory"
    plain = parse([event({"error": "overloaded"}), event(b"[DONE]")])
    assert plain.error == "the server sent an error mid-stream: overloaded"


def test_non_json_line_fails_the_stream_but_parsing_goes_on():
    stream = parse([token("a"), b"data: {oops\n\n", token("b"), event(b"[DONE]")])
    assert not stream.ok and stream.done and stream.chunks == 2
    assert stream.error.startswith("the stream carried a line that is not JSON")
    listed = parse([b"data: [1, 2]\n\n", token("a"), event(b"[DONE]")])
    assert "not an object" in listed.error


def test_a_stream_without_done_or_tokens_fails():
    cut = parse([token("a"), token("b")])
    assert not cut.ok and cut.error == ("the server closed the stream after 2 chunks without "
                                        "finishing it")
    assert cut.ttft_s == 0.5 and cut.itl_s == [1.0]  # what arrived stays measured
    empty = parse([USAGE, event(b"[DONE]")])
    assert not empty.ok and empty.error == "the stream carried no tokens"
    assert parse([]).error.startswith("the server closed the stream after 0 chunks")


# --- the connection, against a raw socket server that splits events across HTTP chunks ----

def http_chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class RawServer:
    """Answers each request with the next canned response, on as many connections as the
    client opens (kept alive while the client keeps them)."""

    def __init__(self, responses: list[bytes]):
        self.responses = list(responses)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"
        self.bodies: list[dict] = []
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.responses:
            conn, _ = self.listener.accept()
            self.connections += 1
            with conn, conn.makefile("rb") as reader:
                while self.responses and self._answer(conn, reader):
                    pass

    def _answer(self, conn: socket.socket, reader) -> bool:
        length, line = 0, b""
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        if not line:
            return False  # the client closed the connection
        self.bodies.append(json.loads(reader.read(length)))
        conn.sendall(self.responses.pop(0))
        return True

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def streamed(*pieces: bytes) -> bytes:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    return head + b"".join(http_chunk(p) for p in pieces) + b"0\r\n\r\n"


def test_connection_parses_events_split_across_http_chunks_and_keeps_alive():
    split = [STREAM[:10], STREAM[10:31], STREAM[31:]]
    error = event({"error": {"message": "bad adapter"}}) + event(b"[DONE]")
    server = RawServer([streamed(*split), streamed(error)])
    ticks = iter(range(1000))
    connection = StreamConnection(server.url, None, timeout_s=5.0)
    try:
        first = connection.stream(b'{"stream": true}', lambda: float(next(ticks)))
        kept = connection.sock
        second = connection.stream(b'{"stream": true}', lambda: float(next(ticks)))
        assert connection.sock is kept  # the same kept-alive connection
    finally:
        connection.close()
        server.close()
    assert server.connections == 1
    assert first.ok and first.text == "abc" and first.status == 200
    assert first.output_tokens == 3 and first.input_tokens == 7
    assert not second.ok and second.error.endswith("bad adapter")
    assert server.bodies == [{"stream": True}, {"stream": True}]


def test_server_client_stream_uses_the_same_parser():
    error = event({"error": {"message": "bad adapter"}}) + event(b"[DONE]")
    server = RawServer([streamed(STREAM[:5], STREAM[5:]), streamed(error)])
    try:
        client = ServerClient(server.url)
        answer = client.stream("m", "hi", max_tokens=3, ignore_eos=True)
        assert answer.text == "abc" and answer.output_tokens == 3
        assert len(answer.token_times_s) == 3 and answer.ttft_s == answer.token_times_s[0]
        with pytest.raises(ServerError, match="error mid-stream: bad adapter"):
            client.stream("m", "hi", max_tokens=3)
    finally:
        server.close()
    assert server.bodies[0]["stream"] is True and server.bodies[0]["ignore_eos"] is True


def test_http_errors_and_missing_servers():
    body = b'{"error": {"message": "The model `x` does not exist."}}'
    refused = (b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    server = RawServer([refused])
    try:
        with pytest.raises(ServerError, match="HTTP 404: The model `x` does not exist") as info:
            ServerClient(server.url).stream("x", "hi", max_tokens=1)
        assert info.value.status == 404
    finally:
        server.close()
    with socket.create_server(("127.0.0.1", 0)) as spare:
        port = spare.getsockname()[1]
    with pytest.raises(ServerError, match="No server answers"):
        ServerClient(f"http://127.0.0.1:{port}").stream("x", "hi", max_tokens=1)


def test_connection_failures_are_told_apart_by_kind():
    import errno
    import socket

    from thrifty.formats import openai_api

    assert openai_api.connection_kind(ConnectionRefusedError()) == openai_api.REFUSED
    assert openai_api.connection_kind(socket.gaierror(-2, "Name or service not known")) == (
        openai_api.UNREACHABLE)
    assert openai_api.connection_kind(OSError(errno.EHOSTUNREACH, "No route to host")) == (
        openai_api.UNREACHABLE)
    assert openai_api.connection_kind(TimeoutError()) == openai_api.STALLED
    assert openai_api.connection_kind(ConnectionResetError()) == openai_api.DROPPED
