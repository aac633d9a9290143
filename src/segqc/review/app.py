"""The review web app (FastAPI): worklist, case layers for the viewer, decisions.

Only case ids of the worklist and the fixed layer names cross the API — no file path is ever
read from a request, so ``../`` or an unknown id is a 404. Every POST carries the per-session
token that the page received when it was served (header ``X-Segqc-Token``); requests whose
``Host`` header is not one of ``allowed_hosts`` are refused (no DNS rebinding from a web page).
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from typing import Any

from pydantic import BaseModel, Field

from segqc.errors import InputError
from segqc.report.cohort import worst_first_key
from segqc.review.store import DECISIONS, DecisionStore, rater_agreement
from segqc.review.volumes import VolumeCache
from segqc.review.worklist import ReviewCase, ReviewWorklist

LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]", "::1")
STATIC_FILES = {"review.js": "text/javascript", "review.css": "text/css",
                "THIRD_PARTY_LICENSES.txt": "text/plain"}


class DecisionIn(BaseModel):
    """The body of a decision: accept, reject, needs_fix or unsure; ``all`` or a class value."""

    decision: str = Field(description="accept, reject, needs_fix or unsure")
    label: str = "all"
    comment: str = Field(default="", max_length=10_000)


@dataclass
class ReviewSession:
    """What one running app serves: the worklist, the decision store, the rater and the token."""

    worklist: ReviewWorklist
    store: DecisionStore
    rater: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    volumes: VolumeCache = field(default_factory=VolumeCache)


def label_colours(labels: dict[str, str]) -> list[dict[str, Any]]:
    """The lookup table of the viewer: value, name and colour (``#rrggbb``) of every class, the
    same colours as the static report."""
    from segqc.report.figures import label_colour

    return [{"value": int(v), "name": name, "colour": label_colour(int(v))}
            for v, name in labels.items() if v.isdigit()]


def invalid_request_message(errors: Any) -> str:
    """One line of what is wrong with a request (where and why, never the input itself), safe to
    encode as UTF-8 JSON whatever the request held."""
    problems = []
    for item in errors:
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        why = str(item.get("msg", "invalid"))
        problems.append(f"{where}: {why}" if where else why)
    text = "invalid request: " + ("; ".join(problems) or "invalid")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _case_row(session: ReviewSession, case: ReviewCase, decisions: dict[tuple[str, str], dict[str, Any]],
              label: str) -> dict[str, Any]:
    mine = decisions.get((case.id, label))
    estimate = case.estimate if label == "all" else case.label_estimate(label, session.worklist.metric)
    return {"id": case.id, "flagged": case.flagged, "reason": case.reason, "estimate": estimate,
            "decision": mine["decision"] if mine else None}


def create_app(session: ReviewSession, *, allowed_hosts: tuple[str, ...] = LOCAL_HOSTS) -> Any:
    """The FastAPI application of ``session``."""
    from fastapi import FastAPI, Header, HTTPException, Request, Response
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from starlette.middleware.trustedhost import TrustedHostMiddleware

    worklist = session.worklist
    app = FastAPI(title="segqc review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which may not even be encodable (a lone surrogate)
        return JSONResponse({"detail": invalid_request_message(error.errors())}, status_code=422)
    static = resources.files("segqc.review") / "static"

    def known_case(case_id: str) -> ReviewCase:
        case = worklist.get(case_id)
        if case is None:
            raise HTTPException(404, "unknown case")
        return case

    def my_decisions(rater: str) -> dict[tuple[str, str], dict[str, Any]]:
        current = session.store.current(rater)
        return {(r["case"], r["label"]): r for r in current.to_dict(orient="records")}

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        page = (static / "index.html").read_text(encoding="utf-8")
        return (page.replace("{{token}}", escape(session.token)).replace("{{rater}}", escape(session.rater))
                .replace("{{title}}", escape(worklist.folder.name)))

    @app.get("/static/{name}")
    def static_file(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(404, "not found")
        return Response((static / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache"})

    @app.get("/api/session")
    def session_info() -> dict[str, Any]:
        return {"rater": session.rater, "raters": sorted(set(session.store.raters()) | {session.rater}),
                "folder": str(worklist.folder), "kind": worklist.kind, "metric": worklist.metric,
                "ref_name": worklist.ref_name, "labels": label_colours(worklist.labels),
                "decisions": list(DECISIONS), "n_cases": len(worklist.cases)}

    @app.get("/api/worklist")
    def get_worklist(flagged: bool = False, unreviewed: bool = False, label: str = "all",
                     rater: str | None = None) -> dict[str, Any]:
        if label != "all" and label not in worklist.labels:
            raise HTTPException(404, "unknown class")
        decisions = my_decisions(rater or session.rater)
        rows = [_case_row(session, case, decisions, label) for case in worklist.cases]
        resume = next((row["id"] for row in rows if row["decision"] is None), None)
        reviewed = sum(1 for case in worklist.cases if (case.id, "all") in decisions)  # a shared file: this list's
        if label != "all":  # as the whole list: cases without a value first, then worst first
            rows.sort(key=lambda r: (r["estimate"] is not None, worst_first_key(r["estimate"], worklist.metric)))
        if flagged:
            rows = [row for row in rows if row["flagged"]]
        if unreviewed:
            rows = [row for row in rows if row["decision"] is None]
        return {"cases": rows, "resume": resume, "reviewed": reviewed, "total": len(worklist.cases)}

    @app.get("/api/cases/{case_id}")
    def get_case(case_id: str) -> dict[str, Any]:
        case = known_case(case_id)
        history = session.store.history(case.id).drop(columns=["id"]).to_dict(orient="records")
        try:
            focus = session.volumes.focus(case)
        except InputError:
            focus = None  # the layer request names the unreadable file
        return {"id": case.id, "flagged": case.flagged, "reason": case.reason, "estimate": case.estimate,
                "values": case.values, "layers": worklist.layers(case), "history": history,
                "focus": focus}

    @app.get("/api/cases/{case_id}/layers/{layer_file}")
    def get_layer(case_id: str, layer_file: str) -> Response:
        case = known_case(case_id)
        layer = layer_file.removesuffix(".nii")
        if layer_file == layer or layer not in worklist.layers(case):
            raise HTTPException(404, "unknown layer")
        try:
            data = session.volumes.layer(case, layer)
        except InputError as error:
            raise HTTPException(422, str(error)) from None
        return Response(data, media_type="application/octet-stream", headers={"Cache-Control": "no-store"})

    @app.post("/api/cases/{case_id}/decisions")
    def post_decision(case_id: str, body: DecisionIn,
                      x_segqc_token: str = Header(default="")) -> dict[str, Any]:
        if not hmac.compare_digest(x_segqc_token.encode(), session.token.encode()):
            raise HTTPException(403, "missing or wrong session token; reload the page")
        case = known_case(case_id)
        if body.decision not in DECISIONS:
            raise HTTPException(422, f"decision must be one of {', '.join(DECISIONS)}")
        if body.label != "all" and body.label not in worklist.labels:
            raise HTTPException(404, "unknown class")
        estimate = case.estimate if body.label == "all" else case.label_estimate(body.label, worklist.metric)
        return session.store.record(case.id, body.decision, rater=session.rater, label=body.label,
                                    comment=body.comment, estimate=estimate)

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        current = session.store.current()
        current = current[current["case"].isin([case.id for case in worklist.cases])]  # one file, several lists
        counts: dict[str, dict[str, int]] = {}
        for row in current[current["label"] == "all"].itertuples(index=False):
            counts.setdefault(row.rater, {d: 0 for d in DECISIONS})[row.decision] += 1
        return {"counts": counts, "total": len(worklist.cases), "kappa": rater_agreement(current)}

    return app
