"""Tests for mnist_study.serving.server: the JSON API's answers to good and bad input, and the drawing page.

The browser test drives headless Chromium through Selenium; it is skipped where chromium or
chromedriver is missing.
"""

import io
import os
import shutil
import socket
import threading
import time
import warnings

import numpy as np
import pytest
from PIL import Image

with warnings.catch_warnings():  # Starlette's TestClient prefers httpx2; httpx is what we have
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

from mnist_study.errors import RunError
from mnist_study.serving.server import MAX_BODY_BYTES, create_app

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


@pytest.fixture
def live_server(run_dir):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(run_dir), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


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
