"""One delivery attempt: POST the signed event to the checked address of the callback URL.

The host is resolved and checked again (its DNS may have changed since submission) and the
connection goes to that checked address, with the original Host header and TLS server name,
so a name cannot resolve to a public address for the check and a private one for the request.
Redirects are not followed. 2xx is delivered; 408, 429, 5xx and network errors are retried;
any other answer is final, so a receiver that refuses an event is not asked again and again.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx

from dfp import __version__
from dfp.webhooks.addresses import IPNetwork, RefusedCallbackError, check_callback_url
from dfp.webhooks.outbox import Attempt, Outcome
from dfp.webhooks.signing import (
    EVENT_ID_HEADER,
    EVENT_TYPE_HEADER,
    SIGNATURE_HEADER,
    signature_header,
)

RETRIED_STATUSES = frozenset({408, 425, 429})
USER_AGENT = f"dfp-webhooks/{__version__}"


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    return float(value) if value.isdigit() else None


def classify(response: httpx.Response) -> Outcome:
    status = response.status_code
    if 200 <= status < 300:
        return Outcome(delivered=True, status_code=status)
    if 300 <= status < 400:
        return Outcome(
            False, status_code=status, error=f"HTTP {status}: redirects are not followed"
        )
    retry = status >= 500 or status in RETRIED_STATUSES
    return Outcome(
        False,
        retry=retry,
        status_code=status,
        error=f"HTTP {status} from the receiver",
        retry_after=_retry_after(response) if retry else None,
    )


def post_event(
    attempt: Attempt,
    secret: str,
    *,
    timeout: float,
    allowed_networks: Sequence[IPNetwork] = (),
    transport: httpx.BaseTransport | None = None,
) -> Outcome:
    """Make one attempt; never raises for anything the receiver or the network does."""
    try:
        addresses = check_callback_url(attempt.url, allowed_networks)
    except RefusedCallbackError as exc:
        # A name that stopped resolving may come back; a refused address will not.
        return Outcome(False, retry="does not resolve" in str(exc), error=f"callback_url {exc}")
    url = httpx.URL(attempt.url)
    body = attempt.body.encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Host": url.netloc.decode("ascii"),
        SIGNATURE_HEADER: signature_header(secret, body),
        EVENT_ID_HEADER: str(attempt.delivery_id),
        EVENT_TYPE_HEADER: attempt.event_type,
    }
    extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
    pinned = url.copy_with(host=str(addresses[0]))
    try:
        with (
            httpx.Client(timeout=timeout, trust_env=False, transport=transport) as client,
            client.stream(
                "POST", pinned, content=body, headers=headers, extensions=extensions
            ) as response,
        ):
            # The answer's status is all that counts; its body is never read.
            return classify(response)
    except httpx.TimeoutException:
        return Outcome(False, retry=True, error=f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return Outcome(False, retry=True, error=f"{type(exc).__name__}: {exc}"[:500])
