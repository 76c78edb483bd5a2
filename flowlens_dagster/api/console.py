"""The web console's static files (built from ``console/`` by ``scripts/setup.sh``), served at ``/``.

Mounted after every ``/api/v1`` route, so the API keeps its paths and the console gets the rest.
When the build is missing, ``/`` answers 503 with the command that builds it instead of a 404.
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
BUILD_COMMAND = "scripts/setup.sh (or: cd console && npm ci && npm run build)"


def console_built(directory: Path = STATIC_DIR) -> bool:
    return (directory / "index.html").is_file() and (directory / "console.js").is_file()


def _not_built(_request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"the web console is not built: run {BUILD_COMMAND}\n", status_code=503)


def mount_console(app: Starlette, directory: Path = STATIC_DIR) -> None:
    """Serve the console at ``/``; call it last, after the API's routes are added."""
    if console_built(directory):
        app.mount("/", StaticFiles(directory=directory, html=True), name="console")
    else:
        app.add_route("/", _not_built, methods=["GET"])
