"""Tests for mnist_study.serving.server: the JSON API's answers to good and bad input, its limits
(size, rate, slow clients), the warning for a server reachable from the network, and the drawing page.

The browser test drives headless Chromium through Selenium; it is skipped where chromium or
chromedriver is missing. tests/test_server_fuzz.py fuzzes the OpenAPI schema; tests/test_server_soak.py
(make soak) holds 50 clients for 10 minutes.
"""

import io
import os
import shutil
import socket
import threading
import time
import warnings
from contextlib import contextmanager

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # Starlette's TestClient prefers httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from mnist_study.errors import RunError
from mnist_study.serving.server import MAX_BODY_BYTES, Limits, RateLimit, create_app, server_config

from conftest import synthetic_digits, train_study

STUDY = """
name = "serve-test"

[[experiment]]
name = "raw64"
title = "784 raw pixels, 64 hidden nodes"
hidden = 64
l2 = 0.001
max_epochs = 3
early_stopping = false
train_size = 12000

[[experiment]]
name = "pca20"
hidden = 20
max_epochs = 1
train_size = 3000
frontend = { kind = "pca", variance = 0.8 }
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, real_mnist):
    return train_study(STUDY, [0], real_mnist, tmp_path_factory.mktemp("run") / "run")


@pytest.fixture(scope="module")
def client(run_dir):
    """The server over networks trained on real MNIST: for tests of what it answers."""
    with TestClient(create_app(run_dir)) as client:
        yield client


@pytest.fixture(scope="module")
def tiny_client(tiny_run):
    """The server over the tiny synthetic run: for tests of how it refuses bad requests."""
    with TestClient(create_app(tiny_run)) as client:
        yield client


def png(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def upload(client, data: bytes, content_type: str = "image/png", **params):
    return client.post("/api/predict", files={"image": ("digit.png", data, content_type)}, params=params)


def as_drawing(image: np.ndarray) -> bytes:
    """An MNIST digit as a canvas drawing: dark ink on white, 10x larger."""
    return png(Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BICUBIC))


# --- good input --------------------------------------------------------------------------------


def test_health_and_models(client):
    assert client.get("/health").json() == {"status": "ok", "models": 2}
    models = client.get("/api/models").json()
    assert models["default"] == "raw64"
    by_name = {m["name"]: m for m in models["models"]}
    assert by_name["raw64"]["hidden"] == 64 and by_name["raw64"]["frontend"] == "raw"
    assert by_name["pca20"]["frontend"] == "pca" and by_name["pca20"]["inputs"] < 784
    assert 0.5 < by_name["raw64"]["validation_accuracy"] <= 1


def test_uploads_are_classified(client, mnist):
    images, labels = mnist.test_images[:40], mnist.test_labels[:40]
    answers = [upload(client, as_drawing(im)) for im in images]
    assert all(a.status_code == 200 for a in answers)
    digits = np.array([a.json()["digit"] for a in answers])
    assert np.mean(digits == labels) >= 0.85
    body = answers[0].json()
    assert body["model"] == "raw64" and len(body["probabilities"]) == 10 and len(body["hidden"]) == 64
    assert sum(body["probabilities"]) == pytest.approx(1, abs=1e-4)
    assert body["confidence"] == max(body["probabilities"]) and min(body["hidden"]) >= 0
    assert np.array(body["input"]).shape == (28, 28)
    jpeg = upload(client, png(Image.open(io.BytesIO(as_drawing(images[0]))).convert("RGB"), "JPEG"), "image/jpeg")
    assert jpeg.status_code == 200 and jpeg.json()["digit"] == body["digit"]


def test_json_pixels_and_model_choice(client, mnist):
    pixels = (mnist.test_images[0] / 255.0).tolist()
    answer = client.post("/api/predict", json={"pixels": pixels})
    assert answer.status_code == 200 and answer.json()["digit"] == mnist.test_labels[0]
    as_is = client.post("/api/predict", json={"pixels": pixels, "preprocess": False, "model": "pca20"}).json()
    assert as_is["model"] == "pca20" and len(as_is["hidden"]) == 20
    np.testing.assert_allclose(as_is["input"], np.round(mnist.test_images[0] / 255.0, 3), atol=1e-6)
    # the model as a query parameter, or as a multipart field
    assert upload(client, as_drawing(mnist.test_images[1]), model="pca20").json()["model"] == "pca20"
    form = client.post("/api/predict", files={"image": ("d.png", as_drawing(mnist.test_images[1]), "image/png")},
                       data={"model": "pca20"})
    assert form.json()["model"] == "pca20"


def test_page_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/api/predict" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # self-contained: no CDN
    assert "default-src 'self'" in page.headers["content-security-policy"]
    schema = client.get("/openapi.json").json()
    assert {"/api/predict", "/api/models", "/health"} <= set(schema["paths"])
    body = schema["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json"} <= set(body)
    assert client.get("/docs").status_code == 200


# --- bad input ---------------------------------------------------------------------------------


def error(answer, status: int, code: str) -> str:
    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code
    return answer.json()["detail"]


def test_bodies_over_2_mib_are_413(tiny_client):
    big = os.urandom(MAX_BODY_BYTES + 1)
    error(upload(tiny_client, big), 413, "too_large")
    # a chunked body has no Content-Length; it is counted as it arrives
    chunks = (b"x" * 65536 for _ in range(MAX_BODY_BYTES // 65536 + 1))
    error(tiny_client.post("/api/predict", content=chunks, headers={"content-type": "application/json"}), 413, "too_large")
    assert tiny_client.get("/health").status_code == 200


def test_wrong_content_types_are_415(tiny_client):
    error(tiny_client.post("/api/predict", content=b"hello", headers={"content-type": "text/plain"}), 415,
          "unsupported_media_type")
    error(tiny_client.post("/api/predict", content=png(np.zeros((8, 8), np.uint8)),
                      headers={"content-type": "image/png"}), 415, "unsupported_media_type")
    error(tiny_client.post("/api/predict", content=b""), 415, "unsupported_media_type")
    error(upload(tiny_client, b"name,value\n", "text/csv"), 415, "unsupported_media_type")


def test_non_images_are_422(tiny_client):
    assert "not an image" in error(upload(tiny_client, b"GIF89a but not really"), 422, "not_an_image")
    error(tiny_client.post("/api/predict", files={"photo": ("d.png", b"x", "image/png")}), 422, "invalid_request")
    error(tiny_client.post("/api/predict", content=b"{not json", headers={"content-type": "application/json"}),
          422, "invalid_request")
    assert "pixels" in error(tiny_client.post("/api/predict", json={"pixels": [[0.0] * 27] * 28}), 422, "invalid_request")
    error(tiny_client.post("/api/predict", json={"pixels": [[2.0] * 28] * 28}), 422, "invalid_request")
    error(tiny_client.post("/api/predict", json={"pixels": [[0.0] * 28] * 28, "path": "/etc/passwd"}), 422,
          "invalid_request")


def test_decompression_bombs_are_422(tiny_client):
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000), 1).save(bomb, format="PNG", optimize=True)  # 100 megapixels in ~12 kB
    assert len(bomb.getvalue()) < MAX_BODY_BYTES
    assert "refused" in error(upload(tiny_client, bomb.getvalue()), 422, "too_many_pixels")


def test_blank_canvas_is_422_no_digit(tiny_client):
    error(upload(tiny_client, png(np.full((280, 280), 255, np.uint8))), 422, "no_digit")
    error(tiny_client.post("/api/predict", json={"pixels": [[0.0] * 28] * 28}), 422, "no_digit")
    error(tiny_client.post("/api/predict", json={"pixels": [[0.0] * 28] * 28, "preprocess": False}), 422, "no_digit")


def test_unknown_models_are_404(tiny_client):
    drawing = as_drawing(synthetic_digits(1, seed=5)[0][0])
    assert "raw8, pca8, forest8" in error(upload(tiny_client, drawing, model="nope"), 404, "unknown_model")
    error(upload(tiny_client, drawing, model="../../etc/passwd"), 404, "unknown_model")
    error(tiny_client.post("/api/predict", json={"pixels": [[0.5] * 28] * 28, "model": "exp99"}), 404,
          "unknown_model")


def test_a_model_is_named_once_and_exactly(tiny_client):
    pixels = (synthetic_digits(1, seed=5)[0][0] / 255.0).tolist()
    drawing = ("d.png", as_drawing(synthetic_digits(1, seed=5)[0][0]), "image/png")
    assert "two models" in error(tiny_client.post("/api/predict?model=raw8", json={"pixels": pixels, "model": "pca8"}),
                                 422, "invalid_request")
    assert tiny_client.post("/api/predict?model=pca8", json={"pixels": pixels, "model": "pca8"}).json()["model"] == "pca8"
    error(tiny_client.post("/api/predict?model=", json={"pixels": pixels}), 404, "unknown_model")
    error(tiny_client.post("/api/predict", json={"pixels": pixels, "model": ""}), 404, "unknown_model")
    # a form's unset field comes empty: the default model, as the drawing page expects
    answer = tiny_client.post("/api/predict", files={"image": drawing}, data={"model": ""})
    assert answer.status_code == 200 and answer.json()["model"] == tiny_client.get("/api/models").json()["default"]
    error(tiny_client.post("/api/predict", files={"image": drawing, "model": ("m.txt", b"raw8", "text/plain")}),
          400, "bad_request")  # one file only: the image
    # JSON numbers and booleans, as the schema says; no "0.5" for 0.5, no 1 for true
    error(tiny_client.post("/api/predict", json={"pixels": pixels, "preprocess": 1}), 422, "invalid_request")
    error(tiny_client.post("/api/predict", json={"pixels": [[str(v) for v in row] for row in pixels]}), 422,
          "invalid_request")


def test_a_folder_that_is_not_a_run_fails_at_once(tmp_path):
    with pytest.raises(RunError, match="not a run directory"):
        create_app(tmp_path)


# --- the page in a browser ---------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
CHROMEDRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(run_dir, limits: Limits = Limits()):
    """The app of `run_dir` under uvicorn, configured as `serve` configures it, on 127.0.0.1 in a
    thread of this process; its base URL, until the block ends."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(server_config(create_app(run_dir, limits), "127.0.0.1", port, limits, "warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                pytest.fail("the server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(run_dir):
    with serving(run_dir) as url:
        yield url


@pytest.mark.browser
@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="chromium and chromedriver are needed")
def test_drawing_shows_prediction_and_activations(live_server, tmp_path):
    pytest.importorskip("selenium")
    from selenium import webdriver
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(live_server)
        wait = WebDriverWait(driver, 20)
        wait.until(lambda d: len(Select(d.find_element(By.ID, "model")).options) == 2)
        pad = driver.find_element(By.ID, "pad")
        # a "1": one stroke down the middle, in small steps so that moves arrive while drawing
        actions = ActionChains(driver, duration=20).move_to_element_with_offset(pad, 0, -100).click_and_hold()
        for _ in range(20):
            actions.move_by_offset(1, 10)
        actions.release().perform()

        digit = wait.until(lambda d: d.find_element(By.ID, "digit").get_attribute("data-digit"))
        assert digit in "0123456789"
        assert wait.until(lambda d: d.find_element(By.ID, "hidden").get_attribute("data-nodes")) == "64"
        bars = [driver.find_element(By.ID, f"p{d}").text for d in range(10)]
        assert all(b.endswith("%") for b in bars)
        driver.save_screenshot(str(tmp_path / "draw.png"))
        assert (tmp_path / "draw.png").stat().st_size > 10_000

        Select(driver.find_element(By.ID, "model")).select_by_value("pca20")  # re-asks the other network
        wait.until(lambda d: d.find_element(By.ID, "hidden").get_attribute("data-nodes") == "20")

        driver.find_element(By.ID, "clear").click()
        assert driver.find_element(By.ID, "digit").get_attribute("data-digit") is None
        assert "bad" not in (driver.find_element(By.ID, "status").get_attribute("class") or "")
    finally:
        driver.quit()


# --- limits: malformed bodies, rate, slow clients, the network -----------------------------------


def test_malformed_multipart_is_400_and_unknown_fields_422(tiny_client):
    garbled = b"--b\r\nnot a header line\r\n\r\nx\r\n--b--\r\n"
    assert "multipart" in error(tiny_client.post("/api/predict", content=garbled,
                                                 headers={"content-type": "multipart/form-data; boundary=b"}),
                                400, "bad_request")
    drawing = ("d.png", as_drawing(synthetic_digits(1, seed=5)[0][0]), "image/png")
    assert "colour" in error(tiny_client.post("/api/predict", files={"image": drawing}, data={"colour": "red"}),
                             422, "invalid_request")  # as unknown JSON keys are


def test_framework_errors_keep_the_error_shape(tiny_run, tiny_client):
    error(tiny_client.get("/api/nothing"), 404, "not_found")
    answer = tiny_client.get("/api/predict")
    error(answer, 405, "method_not_allowed")
    assert answer.headers["allow"] == "POST"
    app = create_app(tiny_run)  # FastAPI's own parameter validation, on a typed parameter added here

    @app.get("/typed")
    async def typed(n: int) -> int:
        return n

    with TestClient(app) as client:
        assert "n" in error(client.get("/typed?n=seven"), 422, "invalid_request")


def asgi_status(app, client: str = "10.0.0.1", path: str = "/api/predict") -> tuple[int, dict]:
    """Status and headers of one POST through the ASGI callable `app`, as if from `client`."""
    import asyncio

    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": [], "client": (client, 40000)}
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}


async def accept(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_rate_limit_is_a_token_bucket_per_client():
    now = [0.0]
    limiter = RateLimit(accept, per_minute=60, burst_s=5, clock=lambda: now[0], max_clients=2)  # 1/s, bursts of 5
    assert [asgi_status(limiter)[0] for _ in range(6)] == [200] * 5 + [429]
    status, headers = asgi_status(limiter)
    assert status == 429 and headers["retry-after"] == "1"
    assert asgi_status(limiter, client="10.0.0.2")[0] == 200  # another client has its own bucket
    assert all(asgi_status(limiter, path="/health")[0] == 200 for _ in range(20))  # never counted
    now[0] = 2.0  # two seconds refill two requests
    assert [asgi_status(limiter)[0] for _ in range(3)] == [200, 200, 429]
    now[0] = 1000.0
    assert [asgi_status(limiter)[0] for _ in range(6)] == [200] * 5 + [429]
    asgi_status(limiter, client="10.0.0.3")  # a third client: more than max_clients, so full buckets go
    assert set(limiter.buckets) == {"10.0.0.1", "10.0.0.3"}
    unlimited = RateLimit(accept, per_minute=0)
    assert all(asgi_status(unlimited)[0] == 200 for _ in range(100))


def test_rate_limit_in_the_app(tiny_run):
    limited = create_app(tiny_run, Limits(requests_per_minute=6))  # a burst of 1, then one every 10 s
    with TestClient(limited) as client:
        assert client.get("/api/models").status_code == 200
        answer = client.get("/api/models")
        assert "6 requests a minute" in error(answer, 429, "rate_limited")
        assert int(answer.headers["retry-after"]) == 10
        assert client.get("/health").status_code == 200
    assert "429" in limited.openapi()["paths"]["/api/predict"]["post"]["responses"]
    unlimited = create_app(tiny_run, Limits(requests_per_minute=0))
    with TestClient(unlimited) as client:
        assert all(client.get("/api/models").status_code == 200 for _ in range(20))
    assert "429" not in unlimited.openapi()["paths"]["/api/predict"]["post"]["responses"]


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_slow_clients_do_not_hold_up_others_and_are_cut_off(tiny_run):
    import httpx

    limits = Limits(header_timeout_s=3, body_timeout_s=3)
    with serving(tiny_run, limits) as url:
        port = int(url.rsplit(":", 1)[1])

        def connect(first: bytes) -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", port), timeout=15)
            sock.sendall(first)
            return sock

        started = time.monotonic()
        silent = [connect(b"") for _ in range(3)]  # connect, then nothing
        headers = [connect(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(3)]  # never ends
        bodies = [connect(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 5000\r\n\r\n{") for _ in range(3)]  # a byte at a time
        stop = threading.Event()

        def trickle():
            while not stop.wait(0.1):
                for sock in headers + bodies:
                    try:
                        sock.send(b"a" if sock in headers else b" ")
                    except OSError:  # cut off by the server
                        pass

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            time.sleep(0.3)
            pixels = (synthetic_digits(1, seed=5)[0][0] / 255.0).tolist()
            with httpx.Client(base_url=url, timeout=5) as client:
                for _ in range(3):
                    start = time.monotonic()
                    assert client.get("/health").status_code == 200
                    answer = client.post("/api/predict", json={"pixels": pixels})
                    assert answer.status_code == 200, answer.text
                    assert time.monotonic() - start < 2
            assert time.monotonic() - started < limits.header_timeout_s  # while every slow client was connected
            huge = connect(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Huge: " + b"a" * 20_000)  # and still coming
            assert read_until_closed(huge).startswith(b"HTTP/1.1 400")  # over h11's 16 KiB for unfinished headers
            huge.close()
            for sock in bodies:
                answer = read_until_closed(sock)
                assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
            for sock in silent + headers:
                assert read_until_closed(sock) == b""
            assert time.monotonic() - started < limits.header_timeout_s + 5
        finally:
            stop.set()
            trickler.join()
            for sock in silent + headers + bodies:
                sock.close()


@pytest.fixture
def no_server(monkeypatch):
    """uvicorn's Server.run records its config instead of listening; torch's threads are restored."""
    import torch
    import uvicorn

    configs = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *args, **kwargs: configs.append(self.config))
    threads = torch.get_num_threads()
    yield configs
    torch.set_num_threads(threads)


def test_a_server_reachable_from_the_network_warns(tiny_run, no_server, capsys):
    from mnist_study.serving.server import serve

    for host in ("127.0.0.1", "localhost", "::1"):
        serve(tiny_run, host=host, port=8123)
        assert "reachable from the network" not in capsys.readouterr().err
    for host in ("0.0.0.0", "::", "192.168.1.20", "my-laptop.local"):
        serve(tiny_run, host=host, port=8123)
        assert "reachable from the network" in capsys.readouterr().err
    assert [config.host for config in no_server][-1] == "my-laptop.local"
    assert no_server[0].http.header_timeout_s == Limits().header_timeout_s


def test_serve_command_sets_the_rate_limit_and_warns(tiny_run, no_server):
    from typer.testing import CliRunner

    from mnist_study.cli import app

    def rate(config) -> int:
        return next(m.kwargs["per_minute"] for m in config.app.user_middleware if m.cls is RateLimit)

    result = CliRunner().invoke(app, ["serve", str(tiny_run), "--host", "0.0.0.0", "--max-requests-per-minute", "30"])
    assert result.exit_code == 0, result.output
    assert "reachable from the network" in result.stderr
    assert rate(no_server[-1]) == 30
    result = CliRunner().invoke(app, ["serve", str(tiny_run)])
    assert result.exit_code == 0 and "reachable" not in result.output
    assert rate(no_server[-1]) == Limits().requests_per_minute  # the CLI's default is the library's
    assert CliRunner().invoke(app, ["serve", str(tiny_run), "--max-requests-per-minute", "-1"]).exit_code == 2
