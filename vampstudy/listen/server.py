"""The listening-test server: a small Starlette app served by uvicorn.

Routes (nothing in them names a condition):

``GET /``                     the page (``static/index.html``)
``GET /static/{file}``        its script and style sheet
``POST /api/next``            ``{"rater_id"}`` → the rater's next trial (or ``done``)
``POST /api/submit``          ``{"rater_id", "trial_id", "ratings": {letter: {...}}}`` → next
``GET /audio/{token}``        one stimulus WAV, by an opaque per-rater token

A submitted trial is written to the journal (fsynced) and ``listening/ratings.csv`` on
the study's parent run before the answer; a rater's last trial, and the server's
shutdown, also record screening, summary and metrics (:mod:`.results`). The server
binds 127.0.0.1 unless told otherwise; on any other address every request needs the
access token printed with the URL (``?token=`` once, then a cookie).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
import threading
import time
from importlib import resources

from . import design as dz
from . import results
from .journal import Journal

logger = logging.getLogger(__name__)

RATER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
STATIC = {"app.js": "text/javascript", "app.css": "text/css", "index.html": "text/html"}


class ListeningTest:
    """The state behind the routes: design, journal, tokens, and the MLflow writes."""

    def __init__(self, test, tracker):
        self.test, self.tracker = test, tracker
        self.design = test.design
        self.journal = Journal(test.state_dir / "journal.jsonl")
        self._tokens: dict[str, tuple[str, str]] = {}   # token → (item, condition)
        self._write = threading.Lock()
        self._published = -1          # journal records last written to MLflow

    # ----------------------------------------------------------- trials
    def _token(self, rater: str, trial_id: str, letter: str) -> str:
        return dz.stimulus_token(self.test.secret, rater, trial_id, letter)

    def _payload(self, rater: str, trial_id: str, position: int, total: int) -> dict:
        trial = dz.trial_by_id(self.design, trial_id)
        stimuli = []
        for letter, cond in dz.trial_letters(self.design, rater, trial).items():
            token = self._token(rater, trial_id, letter)
            self._tokens[token] = (trial["item"], cond)
            stimuli.append({"label": letter, "url": f"audio/{token}"})
        reference = None
        if self.design["open_reference"]:
            token = self._token(rater, trial_id, "reference")
            self._tokens[token] = (trial["item"], dz.HIDDEN_REFERENCE)
            reference = f"audio/{token}"
        return {"done": False, "trial_id": trial_id, "training": trial_id == dz.TRAINING,
                "kind": "ab" if self.design["design"] == "ab" else "mushra",
                "reference": reference, "stimuli": stimuli, "position": position, "total": total}

    def next_trial(self, rater: str) -> dict:
        """The first trial of the rater's order not yet submitted, or ``{"done": True}``."""
        order = dz.rater_order(self.design, rater)
        done = self.journal.done(rater)
        for position, trial_id in enumerate(order):
            if trial_id not in done:
                return self._payload(rater, trial_id, position, len(order))
        return {"done": True, "position": len(order), "total": len(order)}

    def audio(self, token: str):
        """The WAV path of a token handed out by :meth:`next_trial` (None if unknown)."""
        found = self._tokens.get(token)
        return None if found is None else self.test.stimulus_path(*found)

    # ---------------------------------------------------------- submits
    def _record(self, rater: str, trial_id: str, ratings: dict, trial_ms) -> dict:
        trial = dz.trial_by_id(self.design, trial_id)
        mapping = dz.trial_letters(self.design, rater, trial)
        if set(ratings) != set(mapping):
            raise ValueError(f"ratings must cover exactly the letters {sorted(mapping)}")
        rows = []
        for letter, cond in mapping.items():
            r = ratings[letter]
            score = float(r["score"])
            if not 0 <= score <= 100:
                raise ValueError(f"score of {letter} must be within 0–100")
            rows.append({"letter": letter, "condition": cond, "role": dz.role_of(cond),
                         "score": score, "plays": int(r.get("plays", 0)),
                         "listen_ms": int(r.get("listen_ms", 0))})
        return {"rater_id": rater, "trial_id": trial_id, "item": trial["item"],
                "block": trial["block"],
                "position": dz.rater_order(self.design, rater).index(trial_id),
                "training": trial_id == dz.TRAINING, "ratings": rows,
                "trial_ms": int(trial_ms or 0), "submitted_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}

    def submit(self, rater: str, trial_id: str, ratings: dict, trial_ms=None) -> dict:
        """Commit one trial (journal, then MLflow) and return the rater's next trial.
        A trial already submitted is not recorded again (the answer is the same); ratings
        the store missed (it was unreachable) are written with the next submit."""
        if trial_id not in dz.rater_order(self.design, rater):
            raise ValueError(f"unknown trial {trial_id!r}")
        record = self._record(rater, trial_id, ratings, trial_ms)
        with self._write:
            added = self.journal.add(record)
            n = len(self.journal.records())
            if n != self._published:
                results.publish_ratings(self.tracker, self.test, self.journal)
                self._published = n
            nxt = self.next_trial(rater)
            if added and nxt["done"]:
                results.record_analysis(self.tracker, self.test, self.journal)
            return nxt

    def close(self) -> None:
        """Final analysis (on shutdown)."""
        with self._write:
            if self.journal.records():
                results.publish_ratings(self.tracker, self.test, self.journal)
                results.record_analysis(self.tracker, self.test, self.journal)


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def _rater(body: dict) -> str:
    rater = str(body.get("rater_id", "")).strip()
    if not RATER_ID.match(rater):
        raise ValueError("Rater ID: 1–64 letters, digits or . _ @ - (starting with a letter or "
                         "digit)")
    return rater


def _allowed(request, token: str | None) -> bool:
    if token is None:
        return True
    given = request.query_params.get("token") or request.cookies.get("vampstudy_listen")
    return given is not None and hmac.compare_digest(given, token)


async def _api(request, state: ListeningTest):
    """``/api/next`` and ``/api/submit``: JSON in, JSON out; bad input is a 400 naming it."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    try:
        body = json.loads(await request.body() or b"{}")
        rater = _rater(body)
        if request.url.path.endswith("/submit"):
            out = await run_in_threadpool(state.submit, rater, str(body.get("trial_id")),
                                          body.get("ratings") or {}, body.get("trial_ms"))
        else:
            out = await run_in_threadpool(state.next_trial, rater)
    except (ValueError, KeyError, TypeError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except Exception as exc:     # the tracking store failed: the journal has the trial
        logger.exception("writing ratings to the tracking store failed")
        return JSONResponse({"error": f"saved here, but the tracking store failed "
                                      f"({type(exc).__name__})"}, status_code=503)
    return JSONResponse(out)


def create_app(state: ListeningTest, token: str | None = None):
    """The Starlette app of a test; ``token`` (when set) guards every route."""
    from starlette.applications import Starlette
    from starlette.responses import FileResponse, Response
    from starlette.routing import Route

    refused = "access token missing or wrong: open the URL printed by `vampstudy listen`"

    def guard(handler):
        async def wrapped(request):
            if not _allowed(request, token):
                return Response(refused, status_code=403)
            return await handler(request)
        return wrapped

    async def index(request):
        response = Response(_static("index.html"), media_type="text/html")
        if token is not None:
            response.set_cookie("vampstudy_listen", token, httponly=True, samesite="strict")
        return response

    async def static(request):
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404)
        return Response(_static(name), media_type=STATIC[name])

    async def api(request):
        return await _api(request, state)

    async def audio(request):
        path = state.audio(request.path_params["token"])
        if path is None:
            return Response("unknown stimulus", status_code=404)
        return FileResponse(path, media_type="audio/wav", headers={"Cache-Control": "no-store"})

    async def favicon(request):
        return Response(status_code=204)

    return Starlette(routes=[
        Route("/", guard(index)), Route("/static/{name}", guard(static)),
        Route("/api/next", guard(api), methods=["POST"]),
        Route("/api/submit", guard(api), methods=["POST"]),
        Route("/audio/{token}", guard(audio)), Route("/favicon.ico", favicon)])


def serve(state: ListeningTest, host: str = "127.0.0.1", port: int = 8765, ready=None) -> None:
    """Serve until Ctrl-C/SIGTERM; ``ready(url)`` is called once the port accepts connections.
    Any host other than loopback gets an access token (part of the URL)."""
    import uvicorn

    token = None if host in LOOPBACK else secrets.token_urlsafe(18)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets=sockets)
            if self.started and ready is not None:
                ready(url)

    app = create_app(state, token)
    server = _Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                    access_log=False, lifespan="off"))
    try:
        server.run()
    finally:
        state.close()


def listen(tracker, run_id: str = "latest", design: str = "mushra", host: str = "127.0.0.1",
           port: int = 8765, state_dir=None, analyse_only: bool = False, ready=None) -> ListeningTest:
    """Build (or reopen) the test of a study and serve it; with ``analyse_only`` record the
    analysis of the ratings so far instead (no server)."""
    from ..serve import check_port
    from .build import build_test

    test = build_test(tracker, run_id, design, state_dir)
    state = ListeningTest(test, tracker)
    if analyse_only:
        state.close()
        return state
    check_port(host, port)
    serve(state, host, port, ready)
    return state
