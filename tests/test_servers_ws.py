"""The WebSocket echo server as a real process, driven with websocket-client and raw sockets:
byte-exact binary and text echo, HTTP edges (404, plain HTTP), --max-size (1009), compression
negotiation, --delay-ms, and the --work stats contract checked against numpy's own figures."""

from __future__ import annotations

import json
import selectors
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import websocket

from echoswarm import wire
from tests import procs
from tests.conftest import require_tool

FRAME_SIZES = [0, 1, 31, 32, 3200, 480_032, 4 * 1024 * 1024]
pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[procs.Proc]:
    p = procs.server("ws", tmp_path=tmp_path_factory.mktemp("ws"))
    yield p
    assert p.stop() == 0
    assert "Traceback" not in p.stderr_text()


def url(p: procs.Proc, path: str = "/echo") -> str:
    return f"ws://{p.target}{path}"


def connect(p: procs.Proc, path: str = "/echo") -> websocket.WebSocket:
    # websocket-client's pure-Python UTF-8 check takes seconds on 4 MiB; tests decode instead.
    return websocket.create_connection(url(p, path), timeout=20, skip_utf8_validation=True)


def body(size: int, seq: int = 0) -> bytes:
    """A valid frame when there is room for the header, plain bytes otherwise."""
    return wire.build_frame(size, seq=seq) if size >= wire.HEADER_SIZE else wire.pattern(size)


def close_code(ws: websocket.WebSocket) -> int:
    """Read until the server's close frame and return its status code."""
    while True:
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()  # websocket-client would otherwise leave the TCP connection open
            return int(struct.unpack("!H", frame.data[:2])[0]) if len(frame.data) >= 2 else 1005


@pytest.mark.parametrize("size", FRAME_SIZES)
def test_binary_echo_is_byte_exact(echo_server: procs.Proc, size: int) -> None:
    ws = connect(echo_server)
    try:
        for seq in range(3):
            sent = body(size, seq)
            ws.send_binary(sent)
            opcode, got = ws.recv_data()
            assert opcode == websocket.ABNF.OPCODE_BINARY
            assert got == sent
    finally:
        ws.close()


@pytest.mark.parametrize("size", FRAME_SIZES)
def test_text_echo_stays_text(echo_server: procs.Proc, size: int) -> None:
    ws = connect(echo_server)
    try:
        text = ("echo-ü-" * (size // 8 + 1))[:size]
        ws.send(text)
        opcode, got = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert got.decode() == text
    finally:
        ws.close()


def test_other_paths_get_404(echo_server: procs.Proc) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException) as info:
        connect(echo_server, "/nope")
    assert info.value.status_code == 404
    assert connect(echo_server, "/echo?client=x").getstatus() == 101  # query strings are fine


@pytest.mark.parametrize(
    "request_bytes",
    [b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", b"POST /echo HTTP/1.1\r\nHost: x\r\n\r\n"],
)
def test_plain_http_gets_a_4xx(echo_server: procs.Proc, request_bytes: bytes) -> None:
    with socket.create_connection((echo_server.host, echo_server.port), timeout=10) as s:
        s.sendall(request_bytes)
        head = procs.read_http_head(s)
    status = int(head.split(b" ", 2)[1])
    assert 400 <= status < 500, head


@pytest.mark.parametrize(
    "path, upgrade, status",
    [("/echo", False, 426), ("/other", False, 404), ("/other", True, 404)],
)
def test_curl_sees_http_status(
    echo_server: procs.Proc, path: str, upgrade: bool, status: int
) -> None:
    """An HTTP client nobody here wrote: plain requests and upgrade attempts get the status."""
    curl = require_tool("curl")
    headers = ["-H", "Connection: Upgrade", "-H", "Upgrade: websocket"] if upgrade else []
    result = subprocess.run(
        [curl, "-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", *headers,
         f"http://{echo_server.target}{path}"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.stdout == str(status), result.stderr


BROWSER_PAGE = """<html><body><pre id="out">pending</pre><script>
const out = document.getElementById("out");
const ws = new WebSocket("URL");
ws.binaryType = "arraybuffer";
const bin = new Uint8Array(3200).map((_, i) => i % 251);
const got = [];
ws.onopen = () => { ws.send("h\u00e9llo, browser"); ws.send(bin); };
ws.onmessage = (e) => {
  if (typeof e.data === "string") { got.push("text " + e.data); }
  else {
    const b = new Uint8Array(e.data);
    got.push("binary " + b.length + " " + (b.every((v, i) => v === bin[i]) ? "same" : "DIFFERENT"));
  }
  if (got.length === 2) { out.textContent = "DONE " + got.join(" | "); ws.close(1000); }
};
ws.onerror = () => { out.textContent = "ERROR"; };
</script></body></html>"""


def test_a_browser_is_a_client_too(echo_server: procs.Proc, tmp_path) -> None:
    """Chromium's own RFC 6455 implementation: text stays text, binary comes back intact.

    The page reports into its DOM; we read it over the DevTools protocol (its evaluation waits
    for the page's result), because a headless DOM dump would not wait for WebSocket traffic.
    """
    chromium = require_tool("chromium")
    page = tmp_path / "client.html"
    page.write_text(BROWSER_PAGE.replace("URL", url(echo_server)), encoding="utf-8")
    flags = [*procs.chromium_flags(tmp_path / "profile"), "--remote-debugging-port=0"]
    browser = subprocess.Popen(
        [chromium, *flags, page.as_uri()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        devtools = _devtools_port(browser)
        with urllib.request.urlopen(f"http://127.0.0.1:{devtools}/json/list", timeout=10) as r:
            pages = [t for t in json.load(r) if t["type"] == "page"]
        cdp = websocket.create_connection(
            pages[0]["webSocketDebuggerUrl"], timeout=20, suppress_origin=True
        )
        wait_for_result = (
            "new Promise(done => { const poll = () => { const e = document.getElementById('out');"
            " const t = e ? e.textContent : 'pending';"
            " t === 'pending' ? setTimeout(poll, 20) : done(t); }; poll(); })"
        )
        result = None
        deadline = time.monotonic() + 30
        for attempt in range(1, 50):  # the page may still be replacing about:blank: ask again
            cdp.send(json.dumps({"id": attempt, "method": "Runtime.evaluate", "params": {
                "expression": wait_for_result, "awaitPromise": True, "returnByValue": True,
            }}))  # fmt: skip
            reply = json.loads(cdp.recv())
            if "exceptionDetails" not in reply.get("result", {"exceptionDetails": 1}):
                result = reply["result"]["result"].get("value")
                break
            if time.monotonic() > deadline:
                break
        cdp.close()
    finally:
        procs.kill_group(browser.pid)
        browser.wait(timeout=10)
        assert browser.stderr is not None
        browser.stderr.close()
    assert result == "DONE text h\u00e9llo, browser | binary 3200 same", result


def _devtools_port(browser: subprocess.Popen[str]) -> int:
    """The port Chromium prints as "DevTools listening on ws://127.0.0.1:PORT/..."."""
    assert browser.stderr is not None
    deadline = time.monotonic() + 30
    with selectors.DefaultSelector() as sel:
        sel.register(browser.stderr, selectors.EVENT_READ)
        while sel.select(max(0.0, deadline - time.monotonic())):
            line = browser.stderr.readline()
            if not line:
                break
            if "DevTools listening on ws://" in line:
                return int(line.split("ws://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    raise AssertionError("Chromium did not report its DevTools port")


def test_oversized_message_closes_1009_and_server_keeps_serving(start_server) -> None:
    p = start_server("ws", "--max-size", "100000")
    ws = connect(p)
    ws.send_binary(body(100_000))
    assert ws.recv() == body(100_000)
    ws.send_binary(body(100_001))
    assert close_code(ws) == 1009
    again = connect(p)
    again.send_binary(body(3200))
    assert again.recv() == body(3200)
    again.close()
    assert "Traceback" not in p.stderr_text()


@pytest.mark.parametrize("flag, negotiated", [((), False), (("--compression", "deflate"), True)])
def test_compression_only_when_asked(start_server, flag: tuple[str, ...], negotiated: bool) -> None:
    p = start_server("ws", *flag)
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    with socket.create_connection((p.host, p.port), timeout=10) as s:
        s.sendall(procs.ws_upgrade_request(p.host, p.port, extra_headers=offer))
        head = procs.read_http_head(s).lower()
    assert head.startswith(b"http/1.1 101")
    assert (b"permessage-deflate" in head) is negotiated


def test_delay_is_honoured_and_does_not_serialise_pipelined_replies(start_server) -> None:
    p = start_server("ws", "--delay-ms", "50")
    ws = connect(p)
    try:
        ws.send_binary(body(32))  # warm up
        ws.recv()
        t0 = time.monotonic_ns()
        ws.send_binary(body(3200))
        assert ws.recv() == body(3200)
        assert (time.monotonic_ns() - t0) / 1e6 >= 50

        n = 20
        t0 = time.monotonic_ns()
        for seq in range(n):
            ws.send_binary(body(64, seq))
        arrivals = []
        for seq in range(n):
            assert ws.recv() == body(64, seq)  # order preserved
            arrivals.append((time.monotonic_ns() - t0) / 1e6)
        assert min(arrivals) >= 50
        assert max(arrivals) < 50 * n / 2, arrivals  # serialised would be n * 50 ms
    finally:
        ws.close()


# --- --work stats --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image() -> bytes:
    return np.random.default_rng(2024).integers(0, 256, size=(600, 800), dtype=np.uint8).tobytes()


def stats_request(payload: bytes, seq: int) -> bytes:
    return wire.build_frame(
        wire.HEADER_SIZE + len(payload),
        seq=seq,
        intended_send_ns=1_000 + seq,
        sent_ns=2_000 + seq,
        flags=wire.FLAG_STATS_REQUEST,
        payload=payload,
    )


def parse_reply(data: str | bytes, seq: int) -> dict[str, object]:
    assert isinstance(data, bytes), "a STATS reply is a binary message"
    header, payload = wire.parse_frame(data)
    assert header.is_stats_reply and not header.is_stats_request
    assert (header.seq, header.intended_send_ns, header.sent_ns) == (seq, 1_000 + seq, 2_000 + seq)
    return dict(json.loads(bytes(payload).decode("utf-8")))


@pytest.mark.parametrize("reply", ["after", "before"])
def test_stats_mode(start_server, image: bytes, reply: str) -> None:
    p = start_server("ws", "--work", "stats", "--reply", reply, "--workers", "1")
    pixels = np.frombuffer(image, dtype=np.uint8)
    expected = {
        "bytes": 480_000,
        "max": int(pixels.max()),
        "min": int(pixels.min()),
        "mean": float(pixels.mean()),
        "median": float(np.median(pixels)),
    }
    ws = connect(p)
    try:
        for seq in range(3):
            ws.send_binary(stats_request(image, seq))
            got = parse_reply(ws.recv(), seq)
            if reply == "after":
                assert got == expected
            else:
                assert got == {"bytes": 480_000, "status": "accepted"}
        # Everything that is not a STATS request is still echoed unchanged.
        plain = wire.build_frame(3200, seq=9)
        for message in (plain, b"E", b"not a frame", "text stays text"):
            ws.send(message, websocket.ABNF.OPCODE_TEXT if isinstance(message, str) else 2)
            assert ws.recv() == message
        # An empty image has no extremes: nulls, not a crash.
        ws.send_binary(stats_request(b"", 5))
        empty = parse_reply(ws.recv(), 5)
        assert empty["bytes"] == 0
    finally:
        ws.close()
    assert "Traceback" not in p.stderr_text()


BAD_FRAMES = {
    "version": b"ES\x02\x01" + bytes(28),
    "flag": b"ES\x01\x04" + bytes(28),
    "payload bytes": wire.encode_header(10, flags=wire.FLAG_STATS_REQUEST) + b"short",
    "header bytes": b"ES\x01",
}


def test_stats_mode_rejects_invalid_frames_with_1007(start_server) -> None:
    p = start_server("ws", "--work", "stats", "--workers", "1")
    for word, bad in BAD_FRAMES.items():
        ws = connect(p)
        ws.send_binary(bad)
        opcode, frame = ws.recv_data_frame(control_frame=True)
        assert opcode == websocket.ABNF.OPCODE_CLOSE
        assert struct.unpack("!H", frame.data[:2])[0] == 1007
        assert word in frame.data[2:].decode(), frame.data  # a short reason saying what is wrong
        ws.shutdown()
    again = connect(p)  # the server is still up
    again.send_binary(b"ok")
    assert again.recv() == b"ok"
    again.close()


def test_delayed_stats_mode_answers_in_order_then_rejects_a_bad_frame(
    start_server, image: bytes
) -> None:
    """With --delay-ms the replies come from a separate writer; its errors still close 1007."""
    p = start_server("ws", "--work", "stats", "--workers", "1", "--delay-ms", "20")
    ws = connect(p)
    for seq in range(3):
        ws.send_binary(stats_request(image[: 1000 * (seq + 1)], seq))
    ws.send_binary(BAD_FRAMES["version"])
    for seq in range(3):
        assert parse_reply(ws.recv(), seq)["bytes"] == 1000 * (seq + 1)
    assert close_code(ws) == 1007
    again = connect(p)
    again.send("still here")
    assert again.recv() == "still here"
    again.close()
