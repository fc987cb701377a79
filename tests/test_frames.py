"""Server-to-client WebSocket frames: golden headers at each payload length boundary."""

from __future__ import annotations

import subprocess
import sys

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from collab.server.frames import binary_frame
from tests.wire import parse_frames

# RFC 6455 §5.2: FIN + binary opcode (0x82), no mask bit, then the payload length in
# 7 bits (< 126), or 126 and a big-endian u16, or 127 and a big-endian u64.
GOLDEN_HEADERS = {
    0: b"\x82\x00",
    125: b"\x82\x7d",
    126: b"\x82\x7e\x00\x7e",
    65535: b"\x82\x7e\xff\xff",
    65536: b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00",
}


def payload(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


def parse_as_client(data: bytes) -> Frame:
    """Read one frame the way a client does, with the websockets library's parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        assert not reader.buffer, "bytes left over after the frame"
        return done.value
    raise AssertionError("the frame is incomplete")


@pytest.mark.parametrize("size", GOLDEN_HEADERS)
def test_frame_header_at_each_length_boundary(size: int) -> None:
    data = payload(size)
    frame = binary_frame(data)
    header = GOLDEN_HEADERS[size]
    assert frame[: len(header)] == header
    assert frame[len(header) :] == data


@pytest.mark.parametrize("size", GOLDEN_HEADERS)
def test_frames_parse_back_to_the_payload(size: int) -> None:
    data = payload(size)
    parsed = parse_as_client(binary_frame(data))
    assert (parsed.opcode, parsed.fin, parsed.data) == (Opcode.BINARY, True, data)
    assert not (parsed.rsv1 or parsed.rsv2 or parsed.rsv3)
    assert parse_frames(binary_frame(data)) == ([(0x2, data)], True)  # the tests' own reader


def test_the_same_message_is_framed_once() -> None:
    """Fan-out frames one message for every connection: the same object comes back."""
    data = payload(300)
    first = binary_frame(data)
    assert binary_frame(data) is first
    other = payload(300)  # equal bytes, another message: framed anew
    assert binary_frame(other) == first and binary_frame(other) is not first
    assert binary_frame(data) is not first  # only the last message is cached


def test_an_empty_first_message_is_framed() -> None:
    """In a fresh process: ``b""`` is one object, so a cache seeded with it would match."""
    code = "from collab.server.frames import binary_frame; print(binary_frame(b'').hex())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == GOLDEN_HEADERS[0].hex()


@pytest.mark.parametrize("window_bits", [9, 12, 15])  # 15: ISA-L's deflate; smaller: zlib's
def test_a_compressed_frame_inflates_within_the_window_the_client_asked_for(
    window_bits: int,
) -> None:
    import random
    import zlib

    from collab.server.frames import deflated_frame

    rng = random.Random(window_bits)
    words = [bytes(rng.choices(b"abcdefghij", k=rng.randint(3, 9))) for _ in range(400)]
    data = b" ".join(rng.choices(words, k=200_000))  # repeats near and far apart
    frame = deflated_frame(data, window_bits)
    assert frame[0] == 0xC2  # compressed (RSV1)
    ((_, body),), whole = parse_frames(frame)
    assert whole
    inflated = zlib.decompressobj(-window_bits).decompress(body + b"\x00\x00\xff\xff")
    assert inflated == data and len(body) < len(data) // 2


@pytest.mark.parametrize("window_bits", [9, 15])
def test_a_large_message_is_compressed_as_fragments_that_join_into_it(window_bits: int) -> None:
    import random
    import zlib

    from collab.server.frames import deflated_fragments

    rng = random.Random(window_bits)
    data = b" ".join(rng.choice([b"alpha", b"beta", b"gamma", b"delta"]) for _ in range(200_000))
    frames = list(deflated_fragments(data, window_bits, piece_bytes=100_000))
    parsed = [parse_frames(frame) for frame in frames]
    assert all(whole and len(one) == 1 for one, whole in parsed)
    assert len(frames) >= 3  # a first, continuations, a last
    firsts = [frame[0] for frame in frames]
    assert firsts[0] == 0x42  # RSV1 + binary, FIN clear
    assert set(firsts[1:-1]) <= {0x00}  # continuations
    assert firsts[-1] == 0x80  # FIN
    body = b"".join(one[0][1] for one, _ in parsed)
    assert zlib.decompressobj(-window_bits).decompress(body + b"\x00\x00\xff\xff") == data


def test_a_message_under_one_piece_is_one_compressed_frame() -> None:
    import zlib

    from collab.server.frames import deflated_fragments

    data = b"small " * 1000
    (frame,) = deflated_fragments(data, 15)
    assert frame[0] == 0xC2
    ((_, body),), _ = parse_frames(frame)
    assert zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff") == data
