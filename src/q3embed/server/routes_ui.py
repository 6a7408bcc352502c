"""The playground: a static page (ui/: HTML, JS, CSS, no CDN, no build step) at /ui, linked from /.

It calls only the public API, with the key the user types into it, so it shows what any client
gets and unlocks nothing: the page and its assets are open (like /docs), every call it makes is
checked like any other request.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["add_playground", "UI_DIR"]

UI_DIR = Path(__file__).parent / "ui"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    """A browser opening the server's address lands on the playground (POST / stays TEI's)."""
    return RedirectResponse("/ui")


@router.get("/ui")
async def playground() -> FileResponse:
    return FileResponse(UI_DIR / "index.html", media_type="text/html")


def add_playground(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=UI_DIR), name="ui-static")
