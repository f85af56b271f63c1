"""The webhook event: what a receiver gets when an experiment or analysis reaches a terminal
state."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from dfp.webhooks.signing import SIGNATURE_HEADER, SIGNATURE_SCHEME, TOLERANCE_SECONDS

# Where each kind of job lives in the API (experiments train networks; analyses analyse
# uploaded arrays); the event names the kind: `experiment.succeeded`, `analysis.failed`.
COLLECTIONS = {"experiment": "experiments", "analysis": "analyses"}


def event_type(status: str, kind: str = "experiment") -> str:
    return f"{kind}.{status}"


def event_body(
    event_id: uuid.UUID,
    job: dict[str, Any],
    tags: list[str],
    created_at: datetime,
) -> str:
    """The event as compact JSON text: signed and sent as is on every attempt.

    `job` holds the job's row values (id, kind, name, status, error, times)."""
    kind = job.get("kind", "experiment")
    base = f"/v1/{COLLECTIONS[kind]}/{job['id']}"
    error = (
        {"code": job["error_code"], "message": job["error_message"] or ""}
        if job["error_code"] is not None
        else None
    )
    event = {
        "id": str(event_id),
        "type": event_type(job["status"], kind),
        "created_at": created_at.isoformat().replace("+00:00", "Z"),
        "data": {
            kind: {
                "id": str(job["id"]),
                "name": job["name"],
                "status": job["status"],
                "tags": tags,
                "error": error,
                "created_at": job["created_at"].isoformat().replace("+00:00", "Z"),
                "finished_at": job["finished_at"].isoformat().replace("+00:00", "Z"),
                "links": {
                    "self": base,
                    "results": f"{base}/results",
                    "results_csv": f"{base}/results.csv",
                },
            }
        },
    }
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class WebhookSecretPublic(BaseModel):
    """The secret that signs your experiments' webhooks, and how a receiver checks it."""

    secret: str = Field(..., description="HMAC-SHA256 key of the signatures (keep it private).")
    signature_header: str = SIGNATURE_HEADER
    scheme: str = SIGNATURE_SCHEME
    tolerance_seconds: int = Field(
        TOLERANCE_SECONDS, description="Refuse events whose signed time is older than this."
    )
