"""`python -m tvilfm_jax.serve`: the JSON API in-process (the numbers of `python -m tvilfm_jax.search`,
every 4xx, only indexed files served, no writes outside its temp folder) and the page in a real
headless Chromium against a real server, on test_retrieval's synthetic tree and random model."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_retrieval import REPO, TEXT, _extract_args, built  # noqa: F401  (built: the module's fixture)

from tvilfm_jax import extract, search, serve
from tvilfm_jax.retrieval.searcher import Searcher
from tvilfm_jax.web.app import MAX_UPLOAD_BYTES, create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def served(built):  # noqa: F811
    """(built, the queries' features directory, a TestClient of the app, its Searcher)."""
    queries = built["base"] / "queries"
    extract.main(_extract_args(built, "ir", queries))
    searcher = Searcher(built["gallery"])
    app = create_app(searcher, searcher.open_queries(queries))
    with TestClient(app) as client:
        yield built, queries, client, searcher


def _cli(built, tmp_path, *args):
    return search.main([f"--gallery={built['gallery']}", "--top_k=5", f"--output={tmp_path / 'cli'}", *args])


def _assert_same(hits, expected):
    assert [h["row"] for h in hits] == expected.rows.tolist()
    np.testing.assert_allclose([h["score"] for h in hits], expected.scores, rtol=1e-5, atol=1e-5)


def test_api_search_is_the_cli_search(served, tmp_path):
    built, queries, client, _ = served
    path = built["lists"]["ir"][1]
    cli = _cli(built, tmp_path, f"--queries={queries}", f"--query_path={path}", f"--text={TEXT}")
    for m in ("IR", "Text", "Fusion", "MER"):
        response = client.post("/search", data={"query_id": path, "text": TEXT, "modality": m, "k": 5})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["modality"] == m.lower() and body["query"]["pid"] == 2 and body["query"]["caption"]
        _assert_same(body["results"], cli[m.lower()])
        assert [h["match"] for h in body["results"]] == [h["pid"] == 2 for h in body["results"]]
        assert [h["thumbnail"] for h in body["results"]] == [f"/gallery/{h['row']}" for h in body["results"]]

    upload = (built["root"] / path).read_bytes()
    caption = built["captions"]["datasets/sysu/" + path]["description"]
    direct = _cli(built, tmp_path, f"--query_image={built['root'] / path}", f"--text={TEXT}", f"--ir_caption={caption}")
    response = client.post("/search", files={"image": ("q.jpg", upload, "image/jpeg")},
                           data={"text": TEXT, "ir_caption": caption, "modality": "mer", "k": 5, "pid": 2})
    assert response.status_code == 200, response.text
    _assert_same(response.json()["results"], direct["mer"])
    assert all(h["match"] is not None for h in response.json()["results"])
    text_only = client.post("/search", data={"text": TEXT, "k": 5}).json()
    assert text_only["modality"] == "text" and all(h["match"] is None for h in text_only["results"])
    _assert_same(text_only["results"], direct["text"])


def _png(size) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("data, files, status, message", [
    ({"text": "   ", "modality": "text"}, None, 422, "description (text) is empty"),
    ({"query_id": "cam3/9999/0001.jpg"}, None, 404, "unknown query id"),
    ({"query_id": "../meta.json"}, None, 404, "unknown query id"),
    ({}, {"image": ("a.txt", b"not an image", "text/plain")}, 415, "not an image"),
    ({}, {"image": ("a.png", _png((8, 64)), "image/png")}, 422, "64x8 pixels"),
    ({}, {"image": ("a.png", b"\x89PNG" + bytes(MAX_UPLOAD_BYTES), "image/png")}, 413, "at most"),
    ({}, {"image": ("a.png", b"", "image/png")}, 422, "is empty"),
    ({}, None, 422, "give a query"),
    ({"text": TEXT, "modality": "fusion"}, None, 422, "needs an IR query image"),
    ({"query_id": "cam3/0002/0001.jpg", "modality": "mer"}, None, 422, "needs a description"),
    ({"text": TEXT, "modality": "rgb"}, None, 422, "unknown modality"),
    ({"text": TEXT, "k": 0}, None, 422, "k must be between"),
    ({"text": TEXT, "k": "ten"}, None, 422, "k"),
    ({"query_id": "cam3/0002/0001.jpg"}, {"image": ("a.png", _png((32, 16)), "image/png")}, 422, "not both"),
])
def test_bad_input_is_a_4xx_that_says_why(served, data, files, status, message):
    response = served[2].post("/search", data=data, files=files)
    assert response.status_code == status, response.text
    assert message in str(response.json()["detail"])


def test_only_indexed_images_are_served(served):
    built, queries, client, _ = served
    gallery = client.get("/gallery/0")
    assert gallery.status_code == 200 and gallery.content == (built["root"] / built["lists"]["rgb"][0]).read_bytes()
    info = client.get("/api/info").json()
    assert [q["id"] for q in info["queries"]] == built["lists"]["ir"] and info["gallery"]["count"] == len(built["lists"]["rgb"])
    assert client.get("/queries/0").content == (built["root"] / built["lists"]["ir"][0]).read_bytes()
    for url in (f"/gallery/{len(built['lists']['rgb'])}", "/gallery/-1", "/queries/999"):
        assert client.get(url).status_code == 404, url
    for url in ("/gallery/..%2Fmeta.json", "/gallery/%2Fetc%2Fpasswd", "/app.js/../../serve.py"):
        assert client.get(url).status_code in (404, 422), url
    assert "<form" in client.get("/").text and "fetch(" in client.get("/app.js").text


def _tree(*roots) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for r in roots for p in Path(r).rglob("*")}


def test_uploads_spool_only_in_the_apps_temp_folder(served):
    built, queries, _, searcher = served
    system_temp = tempfile.gettempdir()
    # Noise compresses badly: a PNG over the 1 MiB that uploads keep in memory, so it spools to disk.
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (700, 700, 3), np.uint8)).save(big, format="PNG")
    assert 2**20 < len(big.getvalue()) < MAX_UPLOAD_BYTES
    before = _tree(built["base"], REPO / "tvilfm_jax")
    with TestClient(create_app(searcher)) as client:
        temp = client.app.state.temp_dir
        assert tempfile.gettempdir() == temp and Path(temp).is_dir()
        response = client.post("/search", files={"image": ("big.png", big.getvalue(), "image/png")}, data={"k": 3})
        assert response.status_code == 200, response.text
    assert not Path(temp).exists() and tempfile.gettempdir() == system_temp
    assert _tree(built["base"], REPO / "tvilfm_jax") == before


def test_cli_binds_localhost_by_default(built, capsys):  # noqa: F811
    assert serve.parse_args([f"--gallery={built['gallery']}"]).host == "127.0.0.1"
    with pytest.raises(SystemExit) as info:
        serve.main([f"--gallery={built['base']}"])
    assert str(info.value.code).startswith("error: ") and "not a features directory" in str(info.value.code)
    with pytest.raises(SystemExit) as info:
        serve.parse_args(["--help"])
    assert info.value.code == 0 and "--queries" in capsys.readouterr().out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_page_searches_in_a_headless_browser(served, tmp_path):
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: `make install-test` installs it (apt chromium)"
    built, queries, client, _ = served
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tvilfm_jax.serve", f"--gallery={built['gallery']}", f"--queries={queries}",
         f"--port={port}"], cwd=tmp_path, env={**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = server.stdout.readline()  # printed once the model is compiled, before it listens
        assert f"http://127.0.0.1:{port}/" in line, line + server.stdout.read()
        url = f"http://127.0.0.1:{port}/"
        path = built["lists"]["ir"][1]
        expected = client.post("/search", data={"query_id": path, "text": TEXT, "modality": "fusion", "k": 6}).json()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            for _ in range(100):  # uvicorn binds just after the line above
                try:
                    page.goto(url)
                    break
                except Exception:  # noqa: BLE001 (playwright's connection-refused error)
                    time.sleep(0.1)
            page.wait_for_selector(f"#query-id option[value='{path}']", state="attached")
            page.select_option("#query-id", path)
            assert page.input_value("#ir-caption") == expected["query"]["caption"]
            assert expected["query"]["caption"] in page.text_content("#query-captions")
            page.fill("#text", TEXT)
            page.select_option("#modality", "fusion")
            page.fill("#k", "6")
            page.click("#search")
            page.wait_for_function("document.querySelectorAll('#results figure img').length === 6")
            page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.naturalWidth > 0)")
            shown = page.eval_on_selector_all("#results figure", "fs => fs.map(f => [f.className, "
                                              "f.querySelector('img').getAttribute('src')])")
            assert shown == [["hit " + ("match" if h["match"] else "miss"), h["thumbnail"]]
                             for h in expected["results"]]
            page.screenshot(path=str(tmp_path / "page.png"), full_page=True)

            upload = built["root"] / built["lists"]["ir"][3]
            by_upload = client.post("/search", files={"image": ("q.jpg", upload.read_bytes(), "image/jpeg")},
                                    data={"modality": "ir", "k": 4}).json()
            page.set_input_files("#image", str(upload))
            assert page.input_value("#query-id") == "" and f"upload: {upload.name}" in page.text_content("#query-captions")
            page.select_option("#modality", "ir")
            page.fill("#k", "4")
            page.click("#search")
            page.wait_for_function("document.querySelectorAll('#results figure.unknown img').length === 4")
            assert page.eval_on_selector_all("#results img", "is => is.map(i => i.getAttribute('src'))") == \
                [h["thumbnail"] for h in by_upload["results"]]

            page.select_option("#modality", "text")
            page.fill("#text", "  ")
            page.click("#search")
            page.wait_for_function("document.getElementById('error').textContent.includes('is empty')")
            assert page.locator("#results figure").count() == 0
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
