"""GET /v1/webhook-secret: the key that signs the caller's webhooks."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CallerDep
from api.errors import error_responses
from dfp.errors import NotFoundError
from dfp.webhooks.events import WebhookSecretPublic
from dfp.webhooks.signing import owner_secret

router = APIRouter(prefix="/v1", tags=["webhooks"])


@router.get(
    "/webhook-secret",
    operation_id="getWebhookSecret",
    response_model=WebhookSecretPublic,
    responses={
        **error_responses(401, 404, 503),
        404: {
            **error_responses(404)[404],
            "description": "This server sends no webhooks (DFP_WEBHOOK_SECRET is not set)",
        },
    },
)
def get_webhook_secret(caller: CallerDep) -> WebhookSecretPublic:
    """The secret your receivers check webhook signatures (X-DFP-Signature) with."""
    owner = caller.read(lambda _session, owner: owner)
    secret = owner_secret(caller.state.settings, owner)
    if secret is None:
        raise NotFoundError("this server sends no webhooks (DFP_WEBHOOK_SECRET is not set)")
    return WebhookSecretPublic(secret=secret)
