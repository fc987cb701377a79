"""The byte format of logs and snapshots: golden bytes both ways, torn tails, damage."""

from __future__ import annotations

import random

import pytest

from collab.core.errors import DocumentUnavailable
from collab.storage.base import Record
from collab.storage.records import (
    LOG_VERSION,
    Damaged,
    LogHeader,
    NewerFormat,
    ParseResult,
    Snapshot,
    encode_log,
    encode_log_header,
    encode_record,
    encode_snapshot,
    parse_log_header,
    parse_records,
    parse_snapshot,
    parse_snapshot_head,
)

V1_RECORD = bytes.fromhex("02000000 9242ccb6 0102")  # len, crc32, update
V2_RECORD = bytes.fromhex(
    "0e000000 e27592ab"  # len 14, crc32
    "000000000000f83f"  # time 1.5 (f64)
    "0200 c3a9"  # author "é"
    "0102"  # update
)
V1_HEADER = bytes.fromhex("434c4f47 01 0300 646f63")  # CLOG, v1, "doc"
V2_HEADER = bytes.fromhex("434c4f47 02 0300 646f63")
SNAPSHOT = bytes.fromhex(
    "43534e50 01"  # CSNP, v1
    "0f000000 c1555c38"  # len 15, crc32(body)
    "0700000000000000 0300 646f63"  # log_seq 7, "doc"
    "0000"  # state
)


def test_v1_record_golden_bytes():
    assert encode_record(Record(b"\x01\x02", 9.0, "ignored"), 1) == V1_RECORD
    assert parse_records(V1_RECORD, 0, 1) == ParseResult([Record(b"\x01\x02")], len(V1_RECORD))


def test_v2_record_golden_bytes_carry_time_and_author():
    record = Record(b"\x01\x02", 1.5, "é")
    assert encode_record(record) == encode_record(record, 2) == V2_RECORD
    assert parse_records(V2_RECORD, 0, 2).records == [record]


def test_log_headers_golden_bytes():
    assert encode_log_header("doc", 1) == V1_HEADER
    assert encode_log_header("doc") == V2_HEADER and LOG_VERSION == 2
    assert parse_log_header(V1_HEADER + V1_RECORD) == LogHeader(1, "doc", len(V1_HEADER))
    assert parse_log_header(V2_HEADER) == LogHeader(2, "doc", len(V2_HEADER))
    assert encode_log("doc", [Record(b"\x01\x02", 1.5, "é")]) == V2_HEADER + V2_RECORD


def test_snapshot_golden_bytes():
    assert encode_snapshot("doc", 7, b"\x00\x00") == SNAPSHOT
    assert parse_snapshot(SNAPSHOT) == Snapshot(7, "doc", b"\x00\x00")
    assert parse_snapshot_head(SNAPSHOT[:26]) == (7, "doc")


def test_a_newer_version_is_refused_with_a_clear_error():
    with pytest.raises(NewerFormat) as caught:
        parse_log_header(b"CLOG\x03\x03\x00doc")
    assert isinstance(caught.value, DocumentUnavailable) and caught.value.version == 3
    assert str(caught.value) == (
        "written by a newer collab (log format v3); upgrade collab to open it"
    )
    with pytest.raises(NewerFormat, match="snapshot format v2"):
        parse_snapshot(b"CSNP\x02" + SNAPSHOT[5:])


@pytest.mark.parametrize(
    "data", [b"", b"CLO", b"XLOG\x01\x03\x00doc", b"CLOG\x00\x03\x00doc", b"CLOG\x01\x03\x00do"]
)
def test_a_bad_or_short_header_is_damaged(data):
    with pytest.raises(Damaged):
        parse_log_header(data)


@pytest.mark.parametrize("cut", [0, 4, 12, len(SNAPSHOT) - 1])
def test_a_short_or_corrupt_snapshot_is_damaged(cut):
    with pytest.raises(Damaged):
        parse_snapshot(SNAPSHOT[:cut])
    with pytest.raises(Damaged):
        parse_snapshot(SNAPSHOT[:-1] + b"\x01")


def test_empty_updates_are_refused_and_long_authors_cut():
    with pytest.raises(ValueError):
        encode_record(Record(b""))
    long = Record(b"\x01", 0.0, "é" * 40000)  # 80000 bytes of UTF-8
    (parsed,) = parse_records(encode_record(long), 0, 2).records
    assert parsed.author == "é" * 32767


def log_of(records: list[Record], version: int = 2) -> tuple[bytes, list[int]]:
    """A log's bytes and the offset where each record ends."""
    data, ends = encode_log_header("doc", version), []
    for record in records:
        data += encode_record(record, version)
        ends.append(len(data))
    return data, ends


RECORDS = [Record(bytes([i + 1]) * (3 + i), float(i), f"user{i}") for i in range(5)]


def test_a_torn_last_record_is_a_torn_tail():
    data, ends = log_of(RECORDS)
    for bad in (data[:-2], data[:-1] + b"\xff"):  # cut short, or ends at the end with a bad CRC
        assert parse_records(bad, 7 + 3, 2) == ParseResult(
            RECORDS[:4], ends[3], torn=len(bad) - ends[3]
        )


def test_a_bad_record_in_the_middle_loses_only_itself():
    data, ends = log_of(RECORDS)
    damaged = bytearray(data)
    damaged[ends[1] + 9] ^= 0x40  # inside the payload of record 2
    found = parse_records(bytes(damaged), 10, 2)
    assert found.records == RECORDS[:2] + RECORDS[3:]
    assert (found.end, found.lost, found.torn) == (ends[1], ends[2] - ends[1], 0)


def test_a_bad_length_in_the_middle_does_not_hide_what_follows():
    data, ends = log_of(RECORDS)
    damaged = bytearray(data)
    damaged[ends[1] : ends[1] + 4] = (10_000).to_bytes(4, "little")  # points past the end
    found = parse_records(bytes(damaged), 10, 2)
    assert found.records == RECORDS[:2] + RECORDS[3:] and found.lost == ends[2] - ends[1]


def test_damage_then_a_torn_tail_keeps_the_records_between():
    data, ends = log_of(RECORDS)
    damaged = bytearray(data[:-1])  # the last record is cut short
    damaged[ends[0] + 9] ^= 0x01  # and record 1 is damaged
    found = parse_records(bytes(damaged), 10, 2)
    assert found.records == [RECORDS[0], *RECORDS[2:4]]
    assert (found.lost, found.torn) == (ends[1] - ends[0], len(damaged) - ends[3])


def test_damage_with_nothing_valid_after_it_is_lost():
    data, ends = log_of(RECORDS)
    bad = data + b"\x05\x00\x00\x00garbage-garbage"
    found = parse_records(bad, 10, 2)
    assert found.records == RECORDS and found.lost == len(bad) - ends[-1]


def test_zeros_after_a_v1_log_are_not_empty_records():
    data, _ = log_of(RECORDS, version=1)
    found = parse_records(data + bytes(64), 10, 1)
    assert found.records == [Record(r.update) for r in RECORDS] and found.lost == 64


@pytest.mark.parametrize("version", [1, 2])
def test_every_prefix_of_a_log_parses_to_a_prefix_of_its_records(version):
    rng = random.Random(20260301 + version)
    records = [
        Record(rng.randbytes(rng.randint(1, 40)), rng.random() * 2e9, rng.choice(["", "ann", "é"]))
        for _ in range(25)
    ]
    if version == 1:
        records = [Record(r.update) for r in records]
    data, ends = log_of(records, version)
    for cut in range(len(data) + 1):
        prefix = data[:cut]
        try:
            header = parse_log_header(prefix)
        except Damaged:
            assert cut < 10
            continue
        found = parse_records(prefix, header.start, header.version)
        kept = sum(1 for end in ends if end <= cut)
        assert found.records == records[:kept], cut
        assert (found.end, found.lost) == (ends[kept - 1] if kept else 10, 0), cut
        assert found.end + found.torn == cut


def test_one_damaged_byte_loses_exactly_its_record():
    rng = random.Random(7)
    data, ends = log_of(RECORDS * 4)
    starts = [10, *ends[:-1]]
    for _ in range(300):
        at = rng.randrange(10, len(data))
        damaged = bytearray(data)
        damaged[at] ^= rng.randint(1, 255)
        hit = next(i for i, end in enumerate(ends) if at < end)
        found = parse_records(bytes(damaged), 10, 2)
        assert found.records == (RECORDS * 4)[:hit] + (RECORDS * 4)[hit + 1 :], at
        assert found.lost + found.torn == ends[hit] - starts[hit], at


def test_random_headers_raise_only_the_documented_errors():
    rng = random.Random(3)
    for _ in range(2000):
        data = b"CLOG"[: rng.randint(0, 4)] + rng.randbytes(rng.randint(0, 12))
        try:
            header = parse_log_header(data)
        except (Damaged, NewerFormat):
            continue
        parse_records(data, header.start, header.version)
