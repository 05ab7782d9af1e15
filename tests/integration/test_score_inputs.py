"""`tagging score` on the files users have (real local Ray): Parquet with one big row group (cut
into row ranges) and with small groups, a big JSON Lines file cut into byte ranges, the same
gzipped, spreadsheet CSVs (BOM, CRLF, ';', quoted newlines, a 200 KiB field, an unterminated
quote), TSV, bz2 / zstd / lz4 files, a JSON array, all in a Hive-partitioned folder with the
files data tools leave beside data. Then kill-and-rerun inside a split text file and inside a
big row group: exact, and no committed range is redone. Training reads the same files."""

from __future__ import annotations

import csv
import gzip
import json
import signal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import conftest_score as cs
from serve_batch.job import ScoreOptions, run_score
from tagging.artifact import load_artifact

pytestmark = pytest.mark.timeout(400)
UNIT_ROWS = 120  # small units so that tiny files are cut the way big ones are
UNIT_MB = 8 / 1024  # 8 KiB byte ranges


@pytest.fixture(scope="module")
def artifact(tmp_path_factory) -> Path:
    return cs.trained_artifact(tmp_path_factory.getbasetemp() / "score-artifact")


@pytest.fixture(scope="module")
def ray_local():
    with cs.local_ray():
        yield


def _frame(rows: int, seed: int, prefix: str):
    from tagging.synth import generate_corpus

    df = generate_corpus(rows, seed=seed, bad_fraction=0.05)
    import pandas as pd

    df["id"] = pd.Series([f"{prefix}{i}" if isinstance(i, str) and i else i for i in df["id"]], dtype=object)
    return df


def _parquet(df, path: Path, row_group_size: int | None = None) -> None:
    from tagging.synth import write_corpus

    write_corpus(df, str(path))
    if row_group_size:
        pq.write_table(pq.read_table(path), path, row_group_size=row_group_size)


def _spreadsheet_csv(df, path: Path, delimiter: str = ";") -> None:
    """As Excel's "CSV UTF-8" writes it: BOM, CRLF, quotes where needed; plus a 200 KiB text
    (over csv's default 128 KiB field limit), quoted newlines and an unterminated quote last."""
    with open(path, "w", newline="", encoding="utf-8-sig") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(["id", "text", "tags"])
        for i, (rid, text) in enumerate(zip(df["id"], df["text"])):
            text = text if isinstance(text, str) else ""
            w.writerow([rid, text + ("\nsecond line" if i % 9 == 0 else ""), "[]"])
        w.writerow(["huge", "word " * 40_000, "[]"])
        f.write('open;"this quote is never closed\r\nafter-1;a line after it;[]\r\nafter-2;another;[]\r\n')


def write_inputs(folder: Path) -> Path:
    """Every file kind in a Hive-partitioned folder, with the files tools leave beside data."""
    day = folder / "dt=2026-11-21"
    day.mkdir(parents=True)
    _parquet(_frame(400, 1, "pb"), day / "big-group.parquet")  # one row group -> 4 row ranges
    _parquet(_frame(200, 2, "ps"), day / "small-groups.parquet", row_group_size=50)
    from tagging.synth import write_corpus

    write_corpus(_frame(400, 3, "j"), str(day / "big.jsonl"))  # ~8 byte ranges of 8 KiB
    with gzip.open(day / "big.jsonl.gz", "wb") as f:
        f.write((day / "big.jsonl").read_bytes().replace(b'"j', b'"g'))  # other ids, one unit
    _spreadsheet_csv(_frame(150, 4, "c"), day / "excel.csv")
    tsv = _frame(60, 5, "t")
    write_corpus(tsv, str(day / "plain.csv"))
    (day / "plain.csv").rename(day / "tmp.csv")
    with open(day / "tmp.csv", newline="") as src, open(day / "tabs.tsv", "w", newline="") as dst:
        csv.writer(dst, delimiter="\t").writerows(csv.reader(src))
    (day / "tmp.csv").unlink()
    import bz2

    (day / "tabs.tsv.bz2").write_bytes(bz2.compress((day / "tabs.tsv").read_bytes().replace(b"\nt", b"\nb")))
    records = [{"id": f"a{i}", "text": f"array record {i} about databases", "tags": []} for i in range(30)]
    with pa.CompressedOutputStream(str(day / "array.json.zst"), "zstd") as f:
        f.write(json.dumps(records).encode())
    with pa.CompressedOutputStream(str(day / "lines.jsonl.lz4"), "lz4") as f:
        f.write(b"".join(json.dumps({"id": f"l{i}", "text": f"lz4 line {i}", "tags": []}).encode() + b"\n" for i in range(40)))
    for junk in ("_SUCCESS", "_committed_42", ".big.jsonl.crc", "big-group.parquet.crc"):
        (day / junk).write_bytes(b"")
    (folder / "_temporary" / "0").mkdir(parents=True)
    write_corpus(_frame(20, 9, "x"), str(folder / "_temporary" / "0" / "part-0.parquet"))
    return folder


@pytest.fixture(scope="module")
def scored(artifact, ray_local, tmp_path_factory):
    base = tmp_path_factory.mktemp("inputs")
    inputs = write_inputs(base / "incoming")
    opts = ScoreOptions(model=str(artifact), inputs=(str(inputs),), output=str(base / "out"), date=cs.DATE,
                        unit_rows=UNIT_ROWS, unit_mb=UNIT_MB, slice_rows=64)
    messages: list[str] = []
    with cs.on_log(lambda record: messages.append(record.getMessage())):
        summary = run_score(opts)
    return inputs, base / "out" / f"date={cs.DATE}", summary, messages


def test_every_file_kind_is_scored_with_every_row_accounted_for(artifact, scored):
    from tagging.readers import plan_units

    inputs, date_dir, summary, _ = scored
    cfg = load_artifact(artifact).config.data
    expected = cs.expected_outcome([str(inputs)], cfg)  # whole units, read in one process
    out, rejects = cs.read_output(date_dir)
    ids = out.column("id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(expected["valid"])
    assert summary["rows_read"] == expected["records"] == out.num_rows + rejects.num_rows
    assert summary["rejects_by_reason"] == dict(sorted(expected["reasons"].items()))
    sources = out.column("source").to_pylist() + rejects.column("source").to_pylist()
    assert len(set(sources)) == expected["records"]
    files = {s.split("dt=2026-11-21/", 1)[1].split(":", 1)[0] for s in sources}
    assert files == {"big-group.parquet", "small-groups.parquet", "big.jsonl", "big.jsonl.gz", "excel.csv", "tabs.tsv",
                     "tabs.tsv.bz2", "array.json.zst", "lines.jsonl.lz4"}
    units = plan_units([str(inputs)], parquet_unit_rows=UNIT_ROWS, text_unit_bytes=int(UNIT_MB * 2**20))
    assert summary["units"]["total"] == len(units)
    by_file: dict[str, int] = {}
    for u in units:
        by_file[u.path.rsplit("/", 1)[1]] = by_file.get(u.path.rsplit("/", 1)[1], 0) + 1
    assert by_file["big-group.parquet"] == 4 and by_file["small-groups.parquet"] == 4 and by_file["big.jsonl"] > 4
    assert by_file["big.jsonl.gz"] == by_file["array.json.zst"] == by_file["excel.csv"] == 1  # quoted newlines
    # The spreadsheet CSV: the 200 KiB field is a text_too_long reject; the unterminated quote is one
    # malformed record naming the lines it took, and the two lines after it are scored.
    rej = {r["id"] or r["source"]: r for r in rejects.to_pylist()}
    assert rej["huge"]["reason"] == "text_too_long"
    (open_quote,) = [r for r in rejects.to_pylist() if "unterminated quote" in r["reason"]]
    data = (inputs / "dt=2026-11-21" / "excel.csv").read_bytes()
    line = data[: data.index(b'open;"')].count(b"\n") + 1
    assert open_quote["source"].endswith(f"excel.csv:lines {line}-{line + 2}")
    assert {"after-1", "after-2"} <= set(ids)
    assert any(s.split(":", 1)[1].startswith("byte ") for s in sources if "big.jsonl:" in s)


def test_the_run_log_names_skipped_files_and_unsplit_csvs(scored):
    messages = "\n".join(scored[3])
    # _SUCCESS, _committed_42, two .crc files and the _temporary/ part file
    assert "skipped 5 file(s) beside the data" in messages
    assert "excel.csv: a quote is open at a line end" in messages and "read as one unit" in messages


def test_training_reads_the_same_files(artifact, scored, ray_local):
    """`tagging train`'s readers (the Ray Data path and the in-process one) see the same records."""
    from tagging.config import load_config
    from tagging.dist.data import collect_training_rows
    from tagging.local import read_rows_local
    from tagging.readers import plan_units

    inputs, _, summary, _ = scored
    cfg = load_config(None, {})
    units = plan_units([str(inputs)], parquet_unit_rows=UNIT_ROWS, text_unit_bytes=int(UNIT_MB * 2**20))
    rows, rejects = collect_training_rows(units, cfg.data)
    local_rows, local_rejects = read_rows_local([str(inputs)], cfg)
    assert len(rows) + len(rejects) == len(local_rows) + len(local_rejects) == summary["rows_read"]
    assert sorted(rows["id"]) == sorted(local_rows["id"])


@pytest.fixture
def ray_tmp():
    with cs.private_ray_tmp("sbi-") as path:
        yield path


def _cli_args(artifact, inputs, out) -> list[str]:
    return ["score", "--model", str(artifact), "--input", str(inputs), "--output", str(out), "--date", cs.DATE,
            "--unit-rows", str(UNIT_ROWS), "--unit-mb", str(UNIT_MB), "--slice-rows", "64", "--actors", "2"]


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_killed_inside_a_split_file_then_rerun_is_exact_without_redoing_committed_ranges(artifact, tmp_path, kind,
                                                                                          ray_tmp):
    from tagging.synth import write_corpus

    inputs = tmp_path / "in"
    inputs.mkdir()
    df = _frame(900, 7, "k")
    if kind == "jsonl":
        write_corpus(df, str(inputs / "one.jsonl"))  # ~18 byte ranges of 8 KiB
    else:
        _parquet(df, inputs / "one.parquet")  # one row group of 900 rows -> 8 row ranges
    out = tmp_path / "out"
    date_dir = out / f"date={cs.DATE}"
    args = _cli_args(artifact, inputs, out)
    env = {"RAY_TMPDIR": str(ray_tmp)}
    res = cs.run_cli(args, {**env, "SERVE_BATCH_FAULT": "commit@4"})  # killed after moving the 4th unit's files
    assert res.returncode == -signal.SIGKILL, res.stderr[-2000:]
    before = {p.stem: json.loads(p.read_text()) for p in (date_dir / "_commits").glob("*.json")}
    assert len(before) == 3 and all(m["stop"] != -1 or m["start"] > 0 for m in before.values())
    # The rerun gets a Ray of its own (the killed driver's raylet and GCS may outlive it a moment;
    # test_score_resume checks reruns next to them).
    res = cs.run_cli(args, {"RAY_TMPDIR": str(ray_tmp / "r")})
    assert res.returncode == 0, res.stderr[-2000:]
    after = {p.stem: json.loads(p.read_text()) for p in (date_dir / "_commits").glob("*.json")}
    assert all(after[u]["attempt"] == m["attempt"] for u, m in before.items())  # committed ranges kept
    summary = json.loads((date_dir / "summary.json").read_text())
    assert summary["units"]["scored_this_run"] == summary["units"]["total"] - 3 > 3
    expected = cs.expected_outcome([str(inputs)], load_artifact(artifact).config.data)
    scored_t, rejects = cs.read_output(date_dir)
    ids = scored_t.column("id").to_pylist()
    assert len(ids) == len(set(ids)) and set(ids) == set(expected["valid"])
    assert summary["rows_read"] == expected["records"] == scored_t.num_rows + rejects.num_rows


def test_bench_score_layouts_smoke(artifact, tmp_path, ray_tmp):
    out = tmp_path / "bench.json"
    res = cs.run_cli(["bench-score", "--model", str(artifact), "--layout", "csv", "--rows", "400", "--scale", "2",
                      "--ceiling-repeats", "1", "--dedup-ids", "20000", "--out", str(out), "--work-dir", str(tmp_path / "w")],
                     {"RAY_TMPDIR": str(ray_tmp)}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    csv_run = result["layouts"]["csv"]
    assert csv_run["runs"]["1x"]["rows"] == 400 and csv_run["runs"]["2x"]["rows"] == 800
    assert csv_run["over_ceiling"] > 0 and csv_run["rss_scaled_over_1x"] > 0
    assert result["dedup"]["ids"] == 20000 and result["dedup"]["dups"] > 0
    assert "csv" in res.stdout and "duplicate-id pass" in res.stdout
    # Again in the same --work-dir, other rows: the bench rewrites its inputs and starts its outputs afresh
    # (the scorer would refuse a complete night whose inputs changed).
    res = cs.run_cli(["bench-score", "--model", str(artifact), "--layout", "csv", "--rows", "100", "--scale", "2",
                      "--ceiling-repeats", "1", "--out", str(out), "--work-dir", str(tmp_path / "w")],
                     {"RAY_TMPDIR": str(ray_tmp)}, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(out.read_text())["layouts"]["csv"]["runs"]["2x"]["rows"] == 200
