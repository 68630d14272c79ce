"""The FastAPI application: pages (static HTML + vanilla JS + the plotly package's plotly.min.js)
and the JSON API behind them (documented in docs/serve.md).

``create_app(results)`` builds it; ``optimlab serve`` runs it on uvicorn.  Bad input answers 422
with ``{"detail": message, "field": name}``, the message of the validator the CLI uses; a file
that is not under the results root (or does not exist) answers 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from optimlab import __version__
from optimlab.serve import files, hyperparameters, landscape
from optimlab.serve.files import NotFound
from optimlab.serve.landscape import RequestError

STATIC = Path(str(resources.files("optimlab.serve") / "static"))
#: identical landscape requests (a reload, a slider moved back) are answered from memory
CACHE_SIZE = 256


def plotly_js() -> Path:
    """plotly.min.js as the ``plotly`` Python package ships it: served by the app, no CDN."""
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


@lru_cache(maxsize=CACHE_SIZE)
def _landscape_cached(canonical: str) -> str:
    return json.dumps(landscape.run_request(json.loads(canonical)), allow_nan=False)


def _int(field: str, text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise RequestError(field, f"invalid {field}={text!r}; expected an integer") from None


def _float(field: str, text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise RequestError(field, f"invalid {field}={text!r}; expected a number") from None


def _only(request: Request, *allowed: str) -> None:
    """A query parameter the endpoint does not take is an error (``?functon=…`` used to answer
    the default function's surface as if nothing were wrong)."""
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise RequestError(
            unknown[0], f"unknown query parameter {unknown[0]!r}; valid parameters: {valid}"
        )


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """At startup, load numba and the fused kernels in a background thread (`landscape.warm_up`):
    the first playground request would otherwise wait a second or two for them.  A daemon
    thread: it never delays the startup nor holds the shutdown."""
    threading.Thread(target=landscape.warm_up, name="optimlab-warm-up", daemon=True).start()
    yield


def create_app(results: str | Path = "results") -> FastAPI:
    """The app serving the playground, and the comparisons and diagnoses under `results`."""
    root = Path(results)
    app = FastAPI(
        title="optimlab", version=__version__, docs_url=None, redoc_url=None, lifespan=_lifespan
    )
    app.state.results = root

    @app.exception_handler(RequestError)
    async def _bad_request(request: Request, error: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(error), "field": error.field}, status_code=422)

    @app.exception_handler(NotFound)
    async def _not_found(request: Request, error: NotFound) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

    # ---- pages ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def playground() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/runs", include_in_schema=False)
    def runs_page() -> FileResponse:
        return FileResponse(STATIC / "runs.html")

    @app.get("/run", include_in_schema=False)
    def run_page() -> FileResponse:
        return FileResponse(STATIC / "run.html")

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript")

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/files/{relative:path}", include_in_schema=False)
    def served_file(relative: str) -> FileResponse:
        path = files.safe_path(root, relative)
        if not path.is_file():
            raise NotFound(relative)
        return FileResponse(path)

    # ---- the playground's API -------------------------------------------------------------
    @app.get("/api/registry")
    def registry() -> list[dict[str, Any]]:
        return hyperparameters.registry()

    @app.get("/api/functions")
    def functions() -> list[dict[str, Any]]:
        return landscape.functions()

    @app.get("/api/scenarios")
    def scenarios() -> list[dict[str, Any]]:
        return landscape.scenarios()

    @app.get("/api/scenarios/{name}")
    def scenario(name: str) -> dict[str, Any]:
        return landscape.scenario_outcome(name)

    @app.get("/api/surface")
    def surface(
        request: Request, function: str | None = None, points: str | None = None
    ) -> dict[str, Any]:
        _only(request, "function", "points")
        return landscape.surface(function, _int("points", points, landscape.DEFAULT_GRID))

    @app.post("/api/landscape")
    async def run_landscape(request: Request) -> Response:
        try:
            body = await request.json()
        except ValueError:
            raise RequestError("body", "the request body must be JSON") from None
        try:
            canonical = json.dumps(body, sort_keys=True, allow_nan=False)
        except ValueError:
            raise RequestError("body", "numbers must be finite (no NaN or Infinity)") from None
        # the run holds a core for up to a second: off the event loop, so pages keep loading
        answer = await run_in_threadpool(_landscape_cached, canonical)
        return Response(answer, media_type="application/json")

    # ---- comparisons and diagnoses ---------------------------------------------------------
    @app.get("/api/runs")
    def comparisons() -> list[dict[str, Any]]:
        return files.comparisons(root)

    @app.get("/api/run")
    def comparison(request: Request, path: str = "") -> dict[str, Any]:
        _only(request, "path")
        directory = files.comparison(root, path)
        rows = files.trial_rows(directory)
        return {
            "path": path,
            "summary": files.summary(directory),
            "count": rows["count"],
            "last_trial_at": max((t["finished_at"] for t in rows["trials"]), default=None),
            "progress": files.progress(directory),
        }

    @app.get("/api/run/trials")
    def trials(request: Request, path: str = "", since: str | None = None) -> dict[str, Any]:
        _only(request, "path", "since")
        return files.trial_rows(files.comparison(root, path), _float("since", since))

    @app.get("/api/run/curves")
    def curves(request: Request, path: str = "") -> dict[str, Any]:
        _only(request, "path")
        return files.curves(files.comparison(root, path))

    @app.get("/api/diagnoses")
    def diagnoses() -> list[dict[str, Any]]:
        return files.diagnoses(root)

    return app


__all__ = ["create_app", "plotly_js"]
