"""The server under sustained load: 50 clients for 10 minutes, on 127.0.0.1 (make soak).

Marked `soak`, so the default test run leaves it out (the verdict's arithmetic is tested in it). It trains two small networks on MNIST, serves
them in their own process, and posts drawings from 50 keep-alive clients (benchmarks/soak_server.py)
for a 30 s warm-up and then 10 minutes: no request may fail, and the server's resident memory at the
end must be within 10% of its memory after the warm-up. A full soak writes its table (p50 and p99
latency per minute, memory, load average) between the `server-soak` markers of BENCHMARKS.md;
MNIST_STUDY_SOAK_SECONDS=60 checks the harness in a minute and only prints it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from conftest import train_study
from test_serve import STUDY

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import soak_server  # noqa: E402
from common import REPO  # noqa: E402
from load_server import payloads  # noqa: E402

FULL_S = 600.0
SECONDS = float(os.environ.get("MNIST_STUDY_SOAK_SECONDS", FULL_S))
CLIENTS = 50


def test_the_verdict_counts_errors_and_memory_growth():
    answered = [(t / 10, 0.010 + 0.001 * (t % 7)) for t in range(-50, 1200)]  # 10 answers a second, 2 minutes
    samples = [(float(t), 100.0 + (5.0 if t >= 60 else 0.0), 1.5) for t in range(-5, 121)]
    results = soak_server.summarise(answered, [], samples, clients=4, seconds=120, warmup_s=5, interval_s=60)
    assert [i["requests"] for i in results["intervals"]] == [600, 600] and results["requests"] == 1200
    assert 10 <= results["intervals"][0]["p50_ms"] <= results["intervals"][0]["p99_ms"] <= 16
    assert results["rss_after_warmup_mib"] == 100 and results["rss_end_mib"] == 105
    assert not soak_server.problems(results)  # +5% is within the bound
    text = soak_server.markdown(results)
    assert "2 minutes" in text and "| minute |" in text and "The server held" in text

    grown = [(t, rss * (1.5 if t > 100 else 1.0), load) for t, rss, load in samples]
    failed = soak_server.summarise(answered, [(30.0, "status 503"), (90.0, "ConnectionResetError")], grown,
                                   clients=4, seconds=120, warmup_s=5, interval_s=60)
    assert [i["errors"] for i in failed["intervals"]] == [1, 1]
    found = soak_server.problems(failed)
    assert "2 errors (ConnectionResetError, status 503)" in found[0] and "memory grew" in found[1]
    assert "did not hold" in soak_server.markdown(failed)


@pytest.mark.soak
def test_the_server_holds_50_clients_for_10_minutes(tmp_path_factory, real_mnist):
    run_dir = train_study(STUDY, [0], real_mnist, tmp_path_factory.mktemp("soak") / "run")
    bodies = payloads(str(real_mnist), "png")
    interval = 60.0 if SECONDS >= 120 else SECONDS / 4
    results = soak_server.run(run_dir, bodies, CLIENTS, SECONDS, warmup_s=30.0, interval_s=interval)
    results["command"] = "make soak (python -m pytest -q -m soak -s: tests/test_server_soak.py)"
    results["served"] = ": the test's two networks (raw64, pca20) trained on MNIST"
    print("\n" + soak_server.markdown(results))
    if SECONDS == FULL_S:
        soak_server.write(results, REPO / "BENCHMARKS.md")
    assert not soak_server.problems(results), soak_server.problems(results)
    assert results["requests"] >= CLIENTS  # it really did ask
