"""bench/run.py's BENCHMARKS.md table when one bench is measured again (``--keep-others``)."""

from pathlib import Path

import pytest

from bench import run


def block(*lines: str) -> str:
    return "\n".join(["Measured now.", "", "| bench | figure | value | baseline | ratio | target | met |",
                      "|---|---|---|---|---|---|---|", *lines])  # fmt: skip


def test_a_bench_measured_again_replaces_its_rows_and_keeps_one_table_in_the_usual_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = block(
        "| decision | page | 181 ms | 145 ms | 1.25x | <= 2.0x | yes |",
        "| inbox | first page | 17 ms | 17 ms | 1.00x | <= 1.5x | yes |",
        "| monitoring | explorer | 55 ms | 50 ms | 1.09x | <= 1.0x | **no** |",
        "| memory | idle | 114 MiB | – | – | report | – |",
        "",
        "- decision (51 s, ended 09:32): old decision note",
        "- inbox (24 s, ended 10:12): old inbox note",
        "- monitoring (1354 s, ended 09:56): old monitoring note",
        "- memory (429 s, ended 10:09): old memory note",
    )
    (tmp_path / "BENCHMARKS.md").write_text(f"# Benchmarks\n\n{run.START}\n{old}\n{run.END}\nprose\n")
    monkeypatch.setattr(run, "ROOT", tmp_path)
    new = block(
        "| monitoring | explorer | 32 ms | 71 ms | 0.46x | <= 1.0x | yes |",
        "| monitoring | overview | 11 ms | 71 ms | 0.16x | <= 1.0x | yes |",
        "",
        "- monitoring (2045 s, ended 11:58): new monitoring note",
    )

    lines = run.merged(new, ["monitoring"]).splitlines()

    assert lines[:4] == new.splitlines()[:4]  # the new run's heading and the one table header
    assert [line.split(" | ")[0:3] for line in lines[4:9]] == [
        ["| decision", "page", "181 ms"],
        ["| inbox", "first page", "17 ms"],
        ["| monitoring", "explorer", "32 ms"],
        ["| monitoring", "overview", "11 ms"],
        ["| memory", "idle", "114 MiB"],
    ]
    assert sum(line.startswith("| bench |") for line in lines) == 1
    assert lines[9] == ""
    assert [line.split("): ", 1)[1] for line in lines[10:]] == [
        "old decision note", "old inbox note", "new monitoring note", "old memory note",
    ]  # fmt: skip
