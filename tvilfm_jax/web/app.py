"""The search page's web app (FastAPI): a JSON API over one `Searcher` and the page itself.

  GET  /                 the page (static/index.html + static/app.js)
  GET  /api/info         the gallery, the modalities, and the stored queries {id, pid, cam, caption}
  POST /search           multipart form: image (an IR image upload) or query_id (a path listed in
                         the queries' index.jsonl), text, ir_caption, modality (ir | text | fusion |
                         mer, any case), k, pid -> the top-k hits {rank, row, score, path, pid, cam,
                         match, thumbnail}; the same numbers as `python -m tvilfm_jax.search`
  GET  /gallery/{row}    a gallery image, /queries/{row} a query image: only rows of the index
                         files are served, so no other file can be asked for

Bad input is a 4xx with {"detail": message}: 404 an unknown query id or row, 413 an upload over
`MAX_UPLOAD_BYTES`, 415 an upload that is not an image, 422 anything else (no query, an empty
description, an image side under `MIN_SIDE`, a modality the query cannot serve). The app writes
nothing but what uploads spool: the lifespan points `tempfile` at a folder of its own and
deletes it at shutdown. Searches run one at a time (the model is shared).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import threading
from importlib import resources
from typing import Annotated

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from PIL import Image

from tvilfm_jax.data.images import MIN_SIDE, ImageReadError, load_image
from tvilfm_jax.eval.scoring import TEXT_MODALITIES
from tvilfm_jax.eval.settings import MODALITIES
from tvilfm_jax.retrieval import ranking, store
from tvilfm_jax.retrieval.searcher import Searcher, query_row, stored_features

MAX_UPLOAD_BYTES = 8 * 2**20
MAX_TOP_K = 100
DEFAULT_TOP_K = 10
STATIC = resources.files("tvilfm_jax.web") / "static"


def _fail(status: int, message: str):
    raise HTTPException(status_code=status, detail=message)


def _upload_image(data: bytes, name: str):
    """uint8 [H, W, 3] of an uploaded file, as `load_image` decodes a file (an HTTPException if bad)."""
    if not data:
        _fail(422, f"the uploaded file {name!r} is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        _fail(413, f"the uploaded file {name!r} has {len(data)} bytes, at most {MAX_UPLOAD_BYTES} are accepted")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
        if min(width, height) < MIN_SIDE:
            _fail(422, f"the uploaded image {name!r} is {width}x{height} pixels; expected both sides >= {MIN_SIDE}")
        return load_image(io.BytesIO(data))
    except (ImageReadError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        _fail(415, f"the uploaded file {name!r} is not an image (expected a JPEG, PNG or other file PIL decodes)")


def _modality(modality: str | None, has_image: bool, has_text: bool) -> str:
    """The asked modality (lower case), by default the query's own: fusion with both, else ir or text."""
    if modality is None or not modality.strip():
        return "fusion" if has_image and has_text else "ir" if has_image else "text"
    m = modality.strip().lower()
    if m not in MODALITIES:
        _fail(422, f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    if m != "text" and not has_image:
        _fail(422, f"modality {m} needs an IR query image (an upload or a query id)")
    if m in TEXT_MODALITIES and not has_text:
        _fail(422, f"modality {m} needs a description (text)")
    return m


def _text(value: str | None, name: str) -> str | None:
    if value is not None and not value.strip():
        _fail(422, f"the {name} is empty; type one or leave the field out")
    return value


def create_app(searcher: Searcher, queries: store.Features | None = None) -> FastAPI:
    """The app searching `searcher`'s gallery, with `queries` (an IR features directory) as query ids."""
    lock = threading.Lock()
    gallery = searcher.gallery

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.temp_dir, saved = tempfile.mkdtemp(prefix="tvilfm-serve-"), tempfile.tempdir
        tempfile.tempdir = app.state.temp_dir  # where uploads spool
        try:
            yield
        finally:
            tempfile.tempdir = saved
            shutil.rmtree(app.state.temp_dir, ignore_errors=True)

    app = FastAPI(title="tvilfm-jax search", lifespan=lifespan)

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return (STATIC / "index.html").read_text()

    @app.get("/app.js")
    def script() -> Response:
        return Response((STATIC / "app.js").read_text(), media_type="text/javascript")

    @app.get("/api/info")
    def info() -> dict:
        rows = [] if queries is None else [{"id": e.path, "row": i, "pid": e.pid, "cam": e.cam, "caption": e.caption}
                                           for i, e in enumerate(queries.entries)]
        return {"gallery": {"directory": gallery.directory, "count": len(gallery.entries)},
                "model": searcher.model_path, "modalities": list(MODALITIES), "top_k": DEFAULT_TOP_K,
                "max_top_k": MAX_TOP_K, "queries": rows}

    def _file(features: store.Features | None, row: int) -> FileResponse:
        if features is None or not 0 <= row < len(features.entries):
            _fail(404, f"no image row {row}")
        return FileResponse(features.image_path(row))

    @app.get("/gallery/{row}")
    def gallery_image(row: int) -> FileResponse:
        return _file(gallery, row)

    @app.get("/queries/{row}")
    def query_image(row: int) -> FileResponse:
        return _file(queries, row)

    @app.post("/search")
    def search(image: Annotated[UploadFile | None, File()] = None, query_id: Annotated[str | None, Form()] = None,
               text: Annotated[str | None, Form()] = None, ir_caption: Annotated[str | None, Form()] = None,
               modality: Annotated[str | None, Form()] = None, k: Annotated[int, Form()] = DEFAULT_TOP_K,
               pid: Annotated[int | None, Form()] = None) -> dict:
        text, ir_caption = _text(text, "description (text)"), _text(ir_caption, "IR caption")
        if image is not None and query_id is not None:
            _fail(422, "give an uploaded image or a query id, not both")
        if not 1 <= k <= MAX_TOP_K:
            _fail(422, f"k must be between 1 and {MAX_TOP_K}, got {k}")
        has_image = image is not None or query_id is not None
        if not has_image and text is None:
            _fail(422, "give a query: an IR image (upload or query id), a description (text), or both")
        m = _modality(modality, has_image, text is not None)
        try:
            searcher.require_text([m])
        except ValueError as err:
            _fail(422, str(err))
        query = {"id": query_id, "row": None, "pid": pid, "text": text, "ir_caption": ir_caption}
        decoded, row = None, None
        if image is not None:
            decoded = _upload_image(image.file.read(), image.filename or "upload")
        elif query_id is not None:
            if queries is None:
                _fail(404, f"unknown query id {query_id!r}: the server was started without --queries")
            try:
                row = query_row(queries, query_id)
            except ValueError:
                _fail(404, f"unknown query id {query_id!r}; expected a path listed by /api/info")
            entry = queries.entries[row]
            query |= {"row": row, "pid": pid if pid is not None else entry.pid, "caption": entry.caption,
                      "ir_caption": ir_caption or entry.caption}
        with lock:
            caption_feat = None
            if row is not None:
                feats, caption_feat = stored_features(queries, row)
            else:
                feats = None if decoded is None else searcher.image_features(decoded)
            rankings, notes = searcher.search([m], feats, text, ir_caption, k, stored_caption_feat=caption_feat)
        hits = ranking.hits(gallery, rankings[m])
        for hit in hits:
            known = query["pid"] is not None and hit["pid"] is not None
            hit |= {"match": hit["pid"] == query["pid"] if known else None, "thumbnail": f"/gallery/{hit['row']}"}
        return {"query": query, "modality": m, "k": k, "notes": notes, "results": hits}

    return app
