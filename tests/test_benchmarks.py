"""The benchmark scripts: their tables on tiny data (no timing assertions), growth fits, and the
BENCHMARKS.md section replacement that must keep hand-written text."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import common  # noqa: E402
import epoch_speed  # noqa: E402
import run_all  # noqa: E402

TINY = epoch_speed.Settings(widths=(1, 8), peer_widths=(8,), repeats=1, wide_repeats=1, warmup=0, images=600,
                            sizes=(150, 300, 600), seed_widths=(8,), seed_counts=(1, 2), synthetic=True)


def table_rows(text: str, heading: str) -> list[dict[str, str]]:
    """The rows of the first markdown table after `heading`, as {column: cell}."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    assert set("".join(block[1])) <= set("-:| "), "the second line must be the alignment rule"
    return [dict(zip(block[0], row)) for row in block[2:]]


@pytest.fixture(scope="module")
def tiny_results():
    return epoch_speed.run(TINY)


def test_epoch_speed_measures_every_peer_where_asked(tiny_results):
    rows = {r["width"]: r for r in tiny_results["widths"]}
    assert list(rows) == [1, 8]
    for width, row in rows.items():
        measured = {p for p, t in row["seconds"].items() if t is not None}
        every_width = {"floor", "ours", "ours_dense", "ours_eager", "slices"}
        expected = set(epoch_speed.PEERS) if width in TINY.peer_widths else every_width
        assert measured == expected
        assert all(t > 0 for t in row["seconds"].values() if t is not None)
        assert row["ratio"]["floor"] == pytest.approx(1.0)
    assert [r["images"] for r in tiny_results["sizes"]["rows"]] == [150, 300, 600]
    assert [r["seeds"] for r in tiny_results["seeds"][0]["rows"]] == [1, 2]


def test_epoch_speed_markdown_tables(tiny_results):
    text = epoch_speed.markdown(tiny_results)
    rows = table_rows(text, "### Seconds per epoch, by hidden width")
    assert list(rows[0]) == ["hidden", *epoch_speed.PEERS.values()]
    assert [r["hidden"] for r in rows] == ["1", "8"]
    for row in rows:
        assert float(row["floor s/epoch"]) > 0
        for peer in ("ours", "ours, no zero pixels", "ours, eager step", "PyTorch, slices"):
            ratio = re.fullmatch(r"([0-9.]+)× \(([0-9.]+) s\)", row[peer])
            assert ratio and float(ratio.group(1)) > 0 and float(ratio.group(2)) > 0, row[peer]
    narrow, wide = rows
    assert narrow["PyTorch, DataLoader"] == narrow["scikit-learn"] == common.NOT_MEASURED
    assert re.fullmatch(r"[0-9.]+× \([0-9.]+ s\)", wide["scikit-learn"])

    sizes = table_rows(text, "### Ours against the number of training images")
    assert [r["training images"] for r in sizes] == ["150", "300", "600"]
    seeds = table_rows(text, "### Ours against the number of seeds")
    assert [(r["hidden"], r["seeds"]) for r in seeds] == [("8", "1"), ("8", "2")]
    assert seeds[0]["per seed vs 1 seed"] == "1.00×"
    assert re.search(r"number of images \(log-log fit\): \w+ \(slope -?[0-9.]+\)", text)
    assert re.search(r"The compiled epoch against the eager step: [0-9.]+× at width 1, [0-9.]+× at width 8\.", text)


def test_growth_names_the_fitted_exponent():
    xs = [1, 2, 5, 10]
    assert common.growth(xs, [3 * x for x in xs]) == "linear (slope 1.00)"
    assert common.growth(xs, [x * x for x in xs]) == "quadratic (slope 2.00)"
    assert common.growth(xs, [7.0] * 4) == "flat (slope 0.00)"
    assert common.loglog_slope(xs, [x ** 0.5 for x in xs]) == pytest.approx(0.5)


def test_median_time_calls_warmup_plus_repeats():
    calls = []
    assert common.median_time(lambda: calls.append(1), repeats=3, warmup=2) >= 0
    assert len(calls) == 5


HAND_WRITTEN = """# Benchmarks

## Server load

| clients | requests/s |
| --- | --- |
| 10 | 850 |

<!-- training-speed:start -->
## Training speed
old numbers
<!-- training-speed:end -->

## Prediction throughput

batch: 1,000,000 images/s
"""


def test_replace_section_keeps_hand_written_sections():
    text = run_all.replace_section(HAND_WRITTEN, "training-speed", "## Training speed\nnew numbers\n")
    assert "new numbers" in text and "old numbers" not in text
    assert "## Server load" in text and "| 10 | 850 |" in text
    assert text.endswith("## Prediction throughput\n\nbatch: 1,000,000 images/s\n")
    assert text.index("## Server load") < text.index("new numbers") < text.index("## Prediction throughput")
    assert run_all.replace_section(text, "training-speed", "## Training speed\nnew numbers") == text  # idempotent


def test_missing_section_is_appended_and_bad_markers_refused():
    text = run_all.replace_section(HAND_WRITTEN, "study-time", "## Whole study\n12 s")
    assert text.startswith(HAND_WRITTEN.rstrip("\n"))
    assert text.rstrip().endswith("<!-- study-time:start -->\n## Whole study\n12 s\n<!-- study-time:end -->")
    with pytest.raises(ValueError, match="once each"):
        run_all.replace_section(HAND_WRITTEN.replace("<!-- training-speed:end -->", ""), "training-speed", "x")
    with pytest.raises(ValueError, match="once each"):
        run_all.replace_section(HAND_WRITTEN + "<!-- training-speed:start -->\n", "training-speed", "x")


def test_write_sections_creates_then_updates_the_file(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    run_all.write_sections(path, {"training-speed": "## Training speed\nfirst"})
    assert path.read_text().startswith("# Benchmarks")
    path.write_text(path.read_text() + "\n## Server load\nhand-written\n")
    run_all.write_sections(path, {"training-speed": "## Training speed\nsecond", "study-time": "## Study\n1 s"})
    text = path.read_text()
    assert "second" in text and "first" not in text
    assert "## Server load\nhand-written" in text and "## Study\n1 s" in text


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_memory_sampler_sees_a_workers_own_peak():
    import subprocess

    code = "import time; block = bytearray(80 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1)"
    with common.MemorySampler(interval=0.05) as memory:
        subprocess.run([sys.executable, "-c", code], check=True)
    peak = memory.result()
    assert peak["workers_mib"] >= 80
    assert peak["total_mib"] >= peak["workers_mib"]
    assert 0 < peak["self_mib"] <= peak["total_mib"]


def _fake_study_run(workers: int, seeds: list[int], wall: float) -> dict:
    return {"run_dir": "/tmp/x", "study": "paper", "seeds": seeds, "workers": workers, "wall_seconds": wall,
            "stages": {"data": 0.5, "frontend/raw:exp1": 1.0, "train/exp1": wall / 2, "train/exp6": wall / 3},
            "epochs": {"exp1": 9.0, "exp6": 12.0},
            "peak_memory": {"self_mib": 400.0, "workers_mib": 700.0 if workers > 1 else 0.0, "total_mib": 1500.0}}


def test_study_time_markdown_renders_every_table():
    import study_time

    memory = {"self_mib": 600.0, "workers_mib": 0.0, "total_mib": 600.0}
    results = {
        "machine": common.machine(), "failures": ["t-SNE, scikit-learn, 60,000 points: MemoryError"],
        "study": _fake_study_run(2, [0, 1], 100.0),
        "report": {"wall_seconds": 50.0, "tsne_points": 10_000, "peak_memory": memory,
                   "timings": {"seconds": {"data": 1.0, "render": 0.5},
                               "experiments": {"exp1": {"figures": 2.0, "hidden activations": 9.0, "t-SNE": 8.0},
                                               "exp6": {"figures": 3.0, "hidden activations": 10.0,
                                                        "t-SNE": 9.0}}}},
        "tsne": [{"method": m, "points": 10_000, "seconds": t, "data": "hidden activations of exp6 (130 nodes)",
                  "knn_accuracy": 0.95, "peak_memory": memory}
                 for m, t in (("openTSNE", 10.0), ("scikit-learn", 40.0))],
        "workers": [_fake_study_run(1, [0, 1], 150.0), _fake_study_run(2, [0, 1], 100.0)],
        "vectorised": {"together": _fake_study_run(2, [0, 1], 100.0),
                       "one_by_one": [_fake_study_run(2, [0], 80.0), _fake_study_run(2, [1], 80.0)]},
    }
    text = study_time.markdown(results)
    stages = table_rows(text, "### Training and evaluating the study")
    assert stages[0]["wall s"] == "100" and stages[0]["largest worker"] == "700"
    report = {r["analysis"]: r for r in table_rows(text, "### The HTML report")}
    assert report["t-SNE"]["seconds"] == "17.0" and report["t-SNE"]["done"] == "sum over 2 experiments"
    tsne = table_rows(text, "### t-SNE")
    assert tsne[0]["scikit-learn / openTSNE"] == "4.0×"
    workers = table_rows(text, "### Worker processes")
    assert [w["speed-up"] for w in workers] == ["1.00×", "1.50×"]
    assert workers[0]["largest worker"] == common.NOT_MEASURED  # one worker: no worker processes
    assert "saves 38% of the wall time" in text
    assert "- t-SNE, scikit-learn, 60,000 points: MemoryError" in text


def test_many_seeds_markdown_adds_the_report_to_every_run():
    import many_seeds

    memory = {"self_mib": 500.0, "workers_mib": 900.0, "total_mib": 2000.0}
    results = {"machine": common.machine(), "study": "paper",
               "runs": [_fake_study_run(2, [0], 30.0), _fake_study_run(2, list(range(5)), 60.0)],
               "report": {"wall_seconds": 40.0, "tsne_points": 10_000, "peak_memory": memory}}
    text = many_seeds.markdown(results)
    rows = table_rows(text, "The `paper` study")
    assert [r["seeds"] for r in rows] == ["1", "5"]
    assert rows[1]["per seed s"] == "12.0" and rows[1]["per seed vs first"] == "0.40×"
    assert rows[0]["data to report.html s"] == "70.0" and rows[1]["data to report.html s"] == "100"
    assert rows[1]["vs first"] == "1.43×"
    assert "took 40.0 s, peak 2,000 MiB in all processes" in text


def test_run_all_forwards_only_what_each_benchmark_takes():
    args = run_all.parser().parse_args(["--seeds", "5", "--no-tsne", "--repeats", "3"])
    assert run_all.benchmark_args("many-seeds", args) == []
    assert run_all.benchmark_args("study-time", args) == ["--seeds", "5", "--no-tsne"]
    assert run_all.benchmark_args("training-speed", args) == ["--repeats", "3"]
    on_gpu = run_all.parser().parse_args(["--device", "cuda"])
    assert all(run_all.benchmark_args(name, on_gpu) == ["--device", "cuda"] for name in run_all.SECTIONS)


def test_epoch_speed_keeps_every_peer_on_the_chosen_device():
    """PyTorch's meta device refuses any mix with CPU tensors, as CUDA does: the peers that run off
    the CPU keep their data, weights and buffers on the device (the times themselves mean nothing)."""
    from dataclasses import replace

    results = epoch_speed.run(replace(TINY, widths=(8,), sizes=(300, 600), device="meta"))
    measured = {p for p, t in results["widths"][0]["seconds"].items() if t is not None}
    assert measured == {"floor", "ours", "slices"}
    assert "on meta (meta), the data resident there" in epoch_speed.markdown(results)


def test_the_families_benchmark_tables_every_family_on_tiny_data():
    import bench_families

    settings = bench_families.Settings(images=96, repeats=1, warmup=0, families=(
        (2, "sgd", "squared_error"), (1, "adam", "cross_entropy", "no dropout"), (1, "adam", "cross_entropy", "shifts")))
    results = bench_families.run(settings)
    rows = table_rows(bench_families.markdown(results), "### Seconds per epoch per network")
    assert [(r["hidden"], r["regularisation"]) for r in rows] == [("100-100", "dropout"), ("130", "no dropout"),
                                                                 ("130", "shifts")]
    assert all(r["ours"] > 0 and r["plain"] > 0 for r in results["rows"])


def test_the_sweep_parsing_benchmark_counts_what_it_parses():
    import bench_sweep

    results = bench_sweep.run([1_000], repeats=1)
    (row,) = results["rows"]
    assert row["experiments"] == 1_000
    assert "1,000" in bench_sweep.markdown(results)
