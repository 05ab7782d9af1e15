"""The pure input readers (no Ray): Parquet row ranges, byte ranges of text files, CSV as
spreadsheets write it, compressed files, data-lake directories. Files are written by pyarrow,
the csv module, gzip / bz2 and pyarrow's compressed streams."""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tagging import readers
from tagging.config import DataConfig
from tagging.readers import (INVALID_UTF8, MALFORMED, TEXT_TOO_LONG, InputError, ReadUnit, Reject, iter_records,
                             plan_units, read_unit, reason_kind, split_range)


def _read_all(units, cfg=None):
    return [r for u in units for r in read_unit(u, cfg or DataConfig(), need_tags=False)]


def _ids(items):
    return [r.id for r in items]


def test_split_range_is_equal_and_covers_everything():
    assert split_range(10, 10) == [(0, -1)]
    assert split_range(0, 10) == [(0, -1)]
    assert split_range(1000, 256) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    for total, limit in [(11, 2), (1_000_003, 65_536), (7, 1)]:
        r = split_range(total, limit)
        assert r[0][0] == 0 and r[-1][1] == total and all(a[1] == b[0] for a, b in zip(r, r[1:]))
        assert max(b - a for a, b in r) <= limit and max(b - a for a, b in r) - min(b - a for a, b in r) <= 1


def test_read_unit_round_trips_through_a_dict():
    u = ReadUnit("/x/a.jsonl", "jsonl", 0, 3, 4096, 8192)
    assert ReadUnit.from_dict(json.loads(json.dumps({**u.to_dict(), "total": -1}))) == u
    assert u.name == "00003-00000-000000004096" and ReadUnit("/x", "csv", 0, 3).name == "00003-00000"


def test_big_parquet_row_group_is_read_in_ranges_with_only_the_needed_columns(tmp_path, monkeypatch):
    n = 1000
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(n)], "text": [f"text {i}" for i in range(n)],
                             "blob": [b"z" * 100] * n}), tmp_path / "big.parquet")  # one row group
    units = plan_units([str(tmp_path / "big.parquet")], parquet_unit_rows=300)
    assert [(u.part, u.start, u.stop) for u in units] == [(0, 0, 250), (0, 250, 500), (0, 500, 750), (0, 750, 1000)]
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 64)  # ranges cut across decoded batches
    recs = [r for u in units for r in iter_records(u, columns=["id", "text", "tags"])]
    assert [r.record["id"] for r in recs] == [f"r{i}" for i in range(n)]
    assert set(recs[0].record) == {"id", "text"}  # the blob column is never read
    assert recs[250].source.endswith("big.parquet:row 251")


def test_parquet_rows_are_checked_exactly_as_every_other_record(tmp_path, monkeypatch):
    """read_unit checks Parquet rows straight from Arrow batches; the result (rows, rejects,
    reasons, sources, raw) equals validate_record on the same files' RawRecords."""
    from tagging.synth import generate_corpus, write_corpus

    write_corpus(generate_corpus(400, seed=5, bad_fraction=0.3), str(tmp_path / "synth.parquet"))
    n = 300
    pq.write_table(pa.table({  # ids as floats (NaN, 3.0), title + description, a description of numbers
        "id": [float("nan") if i % 11 == 0 else i + 0.5 * (i % 3 == 0) for i in range(n)],
        "title": [None if i % 7 == 0 else (" " if i % 5 == 0 else f"Title {i}") for i in range(n)],
        "description": pa.array([None if i % 4 else i for i in range(n)], pa.int64()),
        "tags": [f"a,b{i % 3}" if i % 9 else "[unclosed" for i in range(n)]}), tmp_path / "numbers.parquet")
    pq.write_table(pa.table({"id": [f" r{i} " if i % 6 else " " for i in range(n)],
                             "title": [f"T{i}" if i % 8 else None for i in range(n)],
                             "description": [None if i % 3 else f"d\x00 {i}" for i in range(n)]}),
                   tmp_path / "strings.parquet")
    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 64)
    units = plan_units([str(tmp_path)], parquet_unit_rows=150)
    cfg = DataConfig()
    for need_tags in (False, True):
        cols = readers.needed_columns(cfg, need_tags)
        generic = [readers.validate_record(rec, cfg, need_tags) for u in units for rec in iter_records(u, cols)]
        fast = [r for u in units for r in read_unit(u, cfg, need_tags)]
        assert fast == generic and len(fast) == 1000
        reasons = {reason_kind(r.reason) for r in fast if isinstance(r, Reject)}
        assert {"missing_id", "null_text", "non_string_text", "text_too_long", "empty_text"} <= reasons
        assert ("unparseable_tags" in reasons) == need_tags


def test_min_units_cuts_smaller_units_for_parallelism_within_bounds(tmp_path):
    """A small night or one big file still gives many units (floors: 4,096 rows / 256 KiB; at most 16
    ranges of one row group unless --unit-rows needs more); without min_units the limits alone."""
    ids = pa.array([f"r{i}" for i in range(100_000)])
    pq.write_table(pa.table({"id": ids.slice(0, 20_000)}), tmp_path / "g.parquet")  # one 20k-row group
    pq.write_table(pa.table({"id": ids}), tmp_path / "big.parquet")  # one 100k-row group
    pq.write_table(pa.table({"id": ids.slice(0, 20_000)}), tmp_path / "small.parquet", row_group_size=2_000)
    (tmp_path / "t.jsonl").write_bytes(b'{"id": "x"}\n' * (1 << 17))  # 1.5 MiB
    ranges = lambda units: [(u.start, u.stop) for u in units]  # noqa: E731
    assert len(plan_units([str(tmp_path / "g.parquet")])) == 1
    g = plan_units([str(tmp_path / "g.parquet")], min_units=8)
    assert ranges(g) == split_range(20_000, 4096) and len(g) == 5  # the 4,096-row floor, not 2,500
    big = plan_units([str(tmp_path / "big.parquet")], min_units=64)
    assert ranges(big) == split_range(100_000, 6_250) and len(big) == 16  # at most 16 ranges of one group
    assert len(plan_units([str(tmp_path / "big.parquet")], parquet_unit_rows=5_000, min_units=64)) == 20  # the bound wins
    assert len(plan_units([str(tmp_path / "small.parquet")], min_units=64)) == 10  # groups under the floor stay whole
    text = plan_units([str(tmp_path / "t.jsonl")], min_units=64)
    assert len(text) == 6 and len(plan_units([str(tmp_path / "t.jsonl")])) == 1  # 256 KiB floor; 4 MiB limit alone
    assert [r.id for r in _read_all(big)] == ids.to_pylist()


def _jsonl(path, n, crlf=False):
    end = "\r\n" if crlf else "\n"
    with open(path, "w", newline="") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"j{i}", "text": f"text number {i} " + "w" * (i % 37)}) + end)
            if i % 50 == 7:
                f.write(end)  # blank lines are not records


@pytest.mark.parametrize("crlf", [False, True])
def test_jsonl_byte_ranges_own_the_lines_that_start_in_them(tmp_path, crlf):
    path = tmp_path / "x.jsonl"
    _jsonl(path, 400, crlf)
    whole = _read_all(plan_units([str(path)]))
    assert len(whole) == 400
    size = path.stat().st_size
    for limit in (size // 7, 997, 64, 1):  # cuts anywhere: mid-line, at a line end, every byte
        units = plan_units([str(path)], text_unit_bytes=limit)
        assert len(units) > 1 and all(not u.whole for u in units)
        got = _read_all(units)
        assert _ids(got) == _ids(whole), limit  # every line once, in order
        assert [r.text for r in got] == [r.text for r in whole]
        assert all(":byte " in r.source for r in got)
        first = got[1].source.rsplit(":byte ", 1)[1]  # a byte offset that starts the record's line
        assert path.read_bytes()[int(first):].startswith(b'{"id": "j1"')


def _spreadsheet_csv(path, delimiter=",", bom=True, rows=None):
    rows = rows or [["1", 'commas, "quotes" and;semicolons'], ["2", "many\nlines\r\nof text"], ["3", "plain"]]
    with open(path, "w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)  # CRLF line ends, as Excel writes them
        w.writerow(["id", "text"])
        w.writerows(rows)


@pytest.mark.parametrize("name,delimiter", [("x.csv", ","), ("x.csv", ";"), ("x.tsv", "\t"), ("x.csv", "|")])
def test_csv_as_spreadsheets_write_it(tmp_path, name, delimiter):
    _spreadsheet_csv(tmp_path / name, delimiter)
    got = _read_all(plan_units([str(tmp_path / name)]))
    assert [(r.id, r.text) for r in got] == [("1", 'commas, "quotes" and;semicolons'), ("2", "many lines of text"),
                                             ("3", "plain")]
    assert readers.input_columns(plan_units([str(tmp_path / name)])[0]) == {"id", "text"}  # no '\ufeffid'


def test_csv_delimiter_option_and_check():
    assert readers.csv_delimiter_of("a.csv", "id;text", "auto") == ";"
    assert readers.csv_delimiter_of("a.csv", "id;text,x", ",") == ","
    assert readers.csv_delimiter_of("a.tsv.gz", "id,text", "auto") == "\t"
    assert readers.csv_delimiter_of("a.csv", "id", "tab") == "\t"
    from tagging.config import ConfigError, load_config

    assert load_config(None, {"data.csv_delimiter": ";"}).data.csv_delimiter == ";"
    with pytest.raises(ConfigError, match="csv_delimiter"):
        load_config(None, {"data.csv_delimiter": ";;"})


def test_csv_field_of_any_size_is_a_text_too_long_reject(tmp_path):
    _spreadsheet_csv(tmp_path / "x.csv", rows=[["1", "x" * 300_000], ["2", "ok"]])  # over csv's 128 KiB limit
    got = _read_all(plan_units([str(tmp_path / "x.csv")]), DataConfig(max_text_chars=10_000))
    assert [(r.id, r.reason if isinstance(r, Reject) else "ok") for r in got] == [("1", TEXT_TOO_LONG), ("2", "ok")]


def test_csv_unterminated_quote_is_one_reject_naming_the_lines_and_the_rest_is_read(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b'id,text\r\n1,fine\r\n2,"never closed\r\n3,three\r\n4,four\r\n')
    got = _read_all(plan_units([str(path)]))
    bad = [r for r in got if isinstance(r, Reject)]
    assert len(bad) == 1 and reason_kind(bad[0].reason) == MALFORMED
    assert bad[0].source.endswith("x.csv:lines 3-5")  # the quote would have taken lines 3-5
    assert [r.id for r in got if not isinstance(r, Reject)] == ["1", "3", "4"]  # counted, not merged
    # A runaway record (past CSV_RECORD_MAX_BYTES of lines) is cut early the same way.
    path.write_bytes(b'id,text\n1,"open\n' + b"".join(b"%d,line\n" % i for i in range(2, 60)))
    import tagging.readers as r

    old, r.CSV_RECORD_MAX_BYTES = r.CSV_RECORD_MAX_BYTES, 100
    try:
        got = _read_all(plan_units([str(path)]))
    finally:
        r.CSV_RECORD_MAX_BYTES = old
    assert reason_kind(got[0].reason) == MALFORMED and [x.id for x in got[1:]] == [str(i) for i in range(2, 60)]


def test_csv_invalid_utf8_stays_invalid_utf8(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"id,text\n1,caf\xe9\n2,ok\n")
    got = _read_all(plan_units([str(path)]))
    assert got[0].reason == INVALID_UTF8 and got[1].text == "ok"


def test_csv_is_split_at_lines_unless_a_quote_spans_a_line_end(tmp_path, caplog):
    rows = [[str(i), f'text "{i}", with a comma'] for i in range(300)]
    _spreadsheet_csv(tmp_path / "flat.csv", rows=rows)
    whole = _read_all(plan_units([str(tmp_path / "flat.csv")]))
    units = plan_units([str(tmp_path / "flat.csv")], text_unit_bytes=500)
    assert len(units) > 5
    assert [(r.id, r.text) for r in _read_all(units)] == [(r.id, r.text) for r in whole] and len(whole) == 300
    _spreadsheet_csv(tmp_path / "multi.csv", rows=rows + [["x", "two\nlines"]])
    with caplog.at_level(logging.INFO, logger="tagging.readers"):
        units = plan_units([str(tmp_path / "multi.csv")], text_unit_bytes=500)
    assert len(units) == 1 and units[0].whole
    assert "read as one unit" in caplog.text and "multi.csv" in caplog.text


def _write_compressed(path, data: bytes):
    codec = path.rsplit(".", 1)[1]
    if codec == "gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    elif codec == "bz2":
        with bz2.open(path, "wb") as f:
            f.write(data)
    else:
        with pa.CompressedOutputStream(path, {"zst": "zstd", "lz4": "lz4"}[codec]) as f:
            f.write(data)


@pytest.mark.parametrize("ext", ["gz", "bz2", "zst", "lz4"])
def test_compressed_jsonl_csv_and_json_read_as_one_unit_each(tmp_path, ext):
    _jsonl(tmp_path / "plain.jsonl", 120)
    _spreadsheet_csv(tmp_path / "plain.csv")
    records = [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}]
    (tmp_path / "plain.json").write_text(json.dumps(records))
    for name in ("plain.jsonl", "plain.csv", "plain.json"):
        target = str(tmp_path / f"c-{name}.{ext}")
        _write_compressed(target, (tmp_path / name).read_bytes())
        units = plan_units([target], text_unit_bytes=64)  # compressed: never split
        assert len(units) == 1 and units[0].whole and units[0].compression
        got = _read_all(units)
        want = _read_all(plan_units([str(tmp_path / name)]))
        assert [(r.id, r.text) for r in got] == [(r.id, r.text) for r in want] and got


def test_json_array_over_the_limit_is_refused_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "big.json").write_text(json.dumps([{"id": str(i), "text": "t"} for i in range(100)]))
    monkeypatch.setattr(readers, "JSON_ARRAY_MAX_BYTES", 1000)
    with pytest.raises(InputError, match=r"big\.json.*JSON Lines"):
        plan_units([str(tmp_path / "big.json")])
    _write_compressed(str(tmp_path / "big.json.gz"), (tmp_path / "big.json").read_bytes())
    (unit,) = plan_units([str(tmp_path / "big.json.gz")])  # size known only once decompressed
    with pytest.raises(InputError, match=r"big\.json\.gz.*JSON Lines"):
        _read_all([unit])


def test_data_lake_directory_reads_partitions_and_skips_what_tools_leave(tmp_path, caplog):
    root = tmp_path / "incoming"
    for day in ("dt=2026-11-20", "dt=2026-11-21"):
        (root / day).mkdir(parents=True)
        pq.write_table(pa.table({"id": [f"{day}-{i}" for i in range(5)], "text": ["t"] * 5}),
                       root / day / "part-00000.parquet")
        (root / day / ".part-00000.parquet.crc").write_bytes(b"crc")
        (root / day / "_SUCCESS").write_bytes(b"")
        (root / day / "_committed_123").write_text("{}")
    (root / "_temporary" / "0").mkdir(parents=True)
    pq.write_table(pa.table({"id": ["tmp"], "text": ["t"]}), root / "_temporary" / "0" / "part-1.parquet")
    (root / "dt=2026-11-21" / "part-00001.parquet.crc").write_bytes(b"crc")
    (root / "dt=2026-11-21" / "notes.txt").write_text("hi")
    with caplog.at_level(logging.INFO, logger="tagging.readers"):
        units = plan_units([str(root)])
    assert [u.path.rsplit("/", 2)[-2] for u in units] == ["dt=2026-11-20", "dt=2026-11-21"]
    assert len(_read_all(units)) == 10
    assert "skipped 8 file(s) beside the data" in caplog.text and "1 of an unknown format" in caplog.text


def test_compressed_parquet_and_unknown_formats_are_refused(tmp_path):
    (tmp_path / "a.parquet.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="compressed Parquet"):
        plan_units([str(tmp_path / "a.parquet.gz")])
    (tmp_path / "a.txt.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="unknown file format"):
        plan_units([str(tmp_path / "a.txt.gz")])
