"""A typed, synchronous Python client for the dfp API (httpx).

    from dfp.client import Client
    with Client() as dfp:                       # DFP_URL / DFP_API_KEY, or the local `dfp serve`
        job = dfp.submit("examples/deeper_is_faster.yaml", tags=["paper"])
        job = dfp.wait(job.id, timeout=600)
        result = dfp.results(job.id, layer=["hidden.1"])

Errors come back as the server's typed errors (`dfp.errors.NotFoundError`,
`LimitExceededError`, ...) carrying its message, code and details.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from dfp.analyses.schemas import AnalysesPublic, AnalysisPublic, AnalysisResultsPublic
from dfp.datasets.schemas import DatasetPublic, DatasetsPublic
from dfp.errors import (
    ERRORS_BY_CODE,
    ERRORS_BY_STATUS,
    DfpError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
)
from dfp.experiments.schemas import (
    ExperimentPublic,
    ExperimentsPublic,
    ExperimentSummary,
    FiguresPublic,
    ResultsPublic,
)
from dfp.settings import Settings
from dfp.webhooks.events import WebhookSecretPublic
from dfp_engine.spec import ExperimentSpec, load_spec

SpecLike = ExperimentSpec | Mapping[str, Any] | str | Path


class WaitTimeoutError(DfpError):
    """`wait` gave up before the experiment reached a terminal state."""

    code = "wait_timeout"


class Client:
    """One connection pool to a dfp server; use as a context manager or call `close()`."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | None = None,
        settings: Settings | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        settings = settings or Settings()
        self.url = (url or settings.client_url()).rstrip("/")
        key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
        if key is None and settings.local_key_file().exists():
            key = settings.local_key_file().read_text(encoding="utf-8").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout or settings.client_timeout,
            transport=transport,
        )

    # --------------------------------------------------------------- plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"cannot reach the dfp server at {self.url}: {exc}", code="unreachable"
            ) from exc
        if response.is_success:
            return response
        raise error_from_response(response)

    # ---------------------------------------------------------------- the API

    def submit(
        self,
        spec: SpecLike,
        *,
        tags: Sequence[str] = (),
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> ExperimentPublic:
        """Submit a spec (an ExperimentSpec, a dict, or a YAML/JSON file path)."""
        body = spec_body(spec)
        if tags:
            body["tags"] = list(tags)
        if callback_url is not None:
            body["callback_url"] = callback_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", "/v1/experiments", json=body, headers=headers)
        return ExperimentPublic.model_validate_json(response.content)

    def get(self, experiment_id: str, *, wait: float = 0) -> ExperimentPublic:
        """The experiment now, or after up to `wait` s (≤ 60) if its status changes sooner."""
        params = {"wait": wait} if wait > 0 else {}
        timeout = self._http.timeout.read
        extended = httpx.Timeout(None if timeout is None else timeout + wait)
        response = self._request(
            "GET", f"/v1/experiments/{experiment_id}", params=params, timeout=extended
        )
        return ExperimentPublic.model_validate_json(response.content)

    def events(
        self, experiment_id: str, *, last_event_id: str | None = None, timeout: float | None = None
    ) -> Iterator[tuple[str, ExperimentPublic]]:
        """(event id, experiment) from the event stream, each time the experiment changes,
        until it is terminal; the stream may also end early (reconnect with `last_event_id`).

        Raises the typed error of an `error` event; `timeout` bounds each wait for data."""
        headers = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        configured = self._http.timeout.read
        read = configured if timeout is None else min(timeout, configured or timeout)
        limits = httpx.Timeout(self._http.timeout.connect, read=read)
        path = f"/v1/experiments/{experiment_id}/events"
        try:
            with self._http.stream("GET", path, headers=headers, timeout=limits) as response:
                if response.status_code == 204:  # the terminal event was the last one seen
                    return
                if not response.is_success:
                    response.read()
                    raise error_from_response(response)
                for event, data, event_id in parse_event_stream(response.iter_lines()):
                    if event == "error":
                        raise error_from_event(data)
                    if event == "experiment":
                        yield event_id or "", ExperimentPublic.model_validate_json(data)
        except httpx.TimeoutException:
            return  # nothing within `timeout`: the caller decides whether to go on
        except httpx.TransportError as exc:
            raise ServiceUnavailableError(
                f"cannot reach the dfp server at {self.url}: {exc}", code="unreachable"
            ) from exc

    def wait(
        self,
        experiment_id: str,
        timeout: float | None = None,
        *,
        on_update: Callable[[ExperimentPublic], object] | None = None,
    ) -> ExperimentPublic:
        """Follow the event stream until the experiment is terminal; `on_update(experiment)`
        sees each state (at least every 2 s while a run trains). Servers without the stream
        are long-polled."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_id: str | None = None
        experiment: ExperimentPublic | None = None
        while True:
            remaining = None if deadline is None else max(0.05, deadline - time.monotonic())
            seen = last_id
            try:
                for event_id, experiment in self.events(
                    experiment_id, last_event_id=seen, timeout=remaining
                ):
                    last_id = event_id
                    if on_update is not None:
                        on_update(experiment)
                    if experiment.is_terminal:
                        return experiment
                    if deadline is not None and time.monotonic() >= deadline:
                        break
            except NotFoundError:
                # Either no such experiment (the GET says so) or a server without the stream.
                return self._long_poll(experiment_id, deadline, timeout, on_update)
            except ServiceUnavailableError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
                time.sleep(1.0)  # the stream's database went away: reconnect shortly
            else:
                if last_id == seen and deadline is None:
                    time.sleep(0.5)  # the stream closed without news: do not spin
            if deadline is not None and time.monotonic() >= deadline:
                current = experiment or self.get(experiment_id)
                if current.is_terminal:
                    return current
                raise WaitTimeoutError(
                    f"experiment {experiment_id} is still {current.status} after {timeout} s",
                    details={"status": current.status},
                )

    def _long_poll(
        self,
        experiment_id: str,
        deadline: float | None,
        timeout: float | None,
        on_update: Callable[[ExperimentPublic], object] | None,
    ) -> ExperimentPublic:
        while True:
            remaining = 60.0 if deadline is None else deadline - time.monotonic()
            experiment = self.get(experiment_id, wait=max(0.0, min(60.0, remaining)))
            if on_update is not None:
                on_update(experiment)
            if experiment.is_terminal:
                return experiment
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"experiment {experiment_id} is still {experiment.status} after {timeout} s",
                    details={"status": experiment.status},
                )

    def results(
        self,
        experiment_id: str,
        *,
        run: Sequence[int] = (),
        layer: Sequence[str] = (),
        epoch: Sequence[int] = (),
    ) -> ResultsPublic:
        """The stored result (partial while running), optionally narrowed."""
        params = {"run": list(run), "layer": list(layer), "epoch": list(epoch)}
        response = self._request("GET", f"/v1/experiments/{experiment_id}/results", params=params)
        return ResultsPublic.model_validate_json(response.content)

    def results_csv(
        self,
        experiment_id: str,
        *,
        run: Sequence[int] = (),
        layer: Sequence[str] = (),
        epoch: Sequence[int] = (),
    ) -> str:
        """The curves as CSV text: run, sweep_value, epoch, step, layer, delta, ..., lfr, rdf."""
        params = {"run": list(run), "layer": list(layer), "epoch": list(epoch)}
        return self._request(
            "GET", f"/v1/experiments/{experiment_id}/results.csv", params=params
        ).text

    def figures(self, experiment_id: str) -> list[str]:
        """Names of the figures the server can draw from the experiment's results."""
        response = self._request("GET", f"/v1/experiments/{experiment_id}/figures")
        return [figure.name for figure in FiguresPublic.model_validate_json(response.content).data]

    def figure(self, experiment_id: str, name: str) -> bytes:
        """One figure as PNG bytes, drawn by the server from the stored results."""
        return self._request("GET", f"/v1/experiments/{experiment_id}/figures/{name}.png").content

    def webhook_secret(self) -> str:
        """The secret that signs this key's owner's webhooks (see `dfp.webhooks.signing`)."""
        response = self._request("GET", "/v1/webhook-secret")
        return WebhookSecretPublic.model_validate_json(response.content).secret

    def cancel(self, experiment_id: str) -> ExperimentPublic:
        """Request cancellation (a terminal experiment is returned unchanged)."""
        response = self._request("POST", f"/v1/experiments/{experiment_id}/cancel")
        return ExperimentPublic.model_validate_json(response.content)

    def delete(self, experiment_id: str) -> None:
        """Delete a terminal experiment and its results."""
        self._request("DELETE", f"/v1/experiments/{experiment_id}")

    def list(
        self,
        *,
        status: Sequence[str] = (),
        tag: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> ExperimentsPublic:
        """One page of your experiments, newest first (`next_cursor` fetches the next)."""
        params: dict[str, Any] = {"status": list(status), "limit": limit}
        if tag is not None:
            params["tag"] = tag
        if created_after is not None:
            params["created_after"] = created_after.isoformat()
        if created_before is not None:
            params["created_before"] = created_before.isoformat()
        if cursor is not None:
            params["cursor"] = cursor
        response = self._request("GET", "/v1/experiments", params=params)
        return ExperimentsPublic.model_validate_json(response.content)

    # --------------------------------------------------------------- datasets

    def upload_dataset(
        self, source: str | Path | Mapping[str, Any], *, name: str | None = None
    ) -> DatasetPublic:
        """Upload an .npy/.npz file, or a mapping of array names to arrays (sent as an .npz).

        The file is streamed from disk; uploading the same bytes again returns the same
        dataset. Name it in specs as `dataset: {kind: uploaded, id: <id>, x: ..., y: ...}`."""
        if isinstance(source, Mapping):
            import numpy as np

            with tempfile.TemporaryDirectory(prefix="dfp-upload-") as folder:
                path = Path(folder) / f"{name or 'arrays'}.npz"
                arrays = {key: np.asarray(value) for key, value in source.items()}
                np.savez(path, **arrays)  # type: ignore[arg-type]
                return self._upload(path, name)
        return self._upload(Path(source), name)

    def _upload(self, path: Path, name: str | None) -> DatasetPublic:
        data = {"name": name} if name is not None else {}
        try:
            handle = path.open("rb")
        except OSError as exc:
            raise InvalidRequestError(f"cannot read '{path}': {exc}") from None
        with handle:
            response = self._request(
                "POST", "/v1/datasets", files={"file": (path.name, handle)}, data=data
            )
        return DatasetPublic.model_validate_json(response.content)

    def dataset(self, dataset_id: str) -> DatasetPublic:
        """One of your datasets: its arrays' names, shapes and dtypes."""
        response = self._request("GET", f"/v1/datasets/{dataset_id}")
        return DatasetPublic.model_validate_json(response.content)

    def datasets(self, *, limit: int = 50, cursor: str | None = None) -> DatasetsPublic:
        """One page of your datasets, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = self._request("GET", "/v1/datasets", params=params)
        return DatasetsPublic.model_validate_json(response.content)

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset no unfinished experiment or analysis reads."""
        self._request("DELETE", f"/v1/datasets/{dataset_id}")

    # --------------------------------------------------------------- analyses

    def analyze(
        self,
        dataset_id: str,
        *,
        features: Sequence[str],
        targets: str,
        deltas: Sequence[float] | None = None,
        inverse_deltas: Sequence[float] | None = None,
        auto_deltas: int | None = None,
        normalization: str | None = None,
        predictions: str | None = None,
        device: str | None = None,
        ci: float | None = None,
        name: str | None = None,
        tags: Sequence[str] = (),
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> AnalysisPublic:
        """Submit the frequency analysis of uploaded arrays: one layer per feature array."""
        optional = {
            "deltas": None if deltas is None else list(deltas),
            "inverse_deltas": None if inverse_deltas is None else list(inverse_deltas),
            "auto_deltas": auto_deltas,
            "normalization": normalization,
            "predictions": predictions,
            "device": device,
            "ci": ci,
            "name": name,
            "callback_url": callback_url,
            "tags": list(tags) or None,
        }
        body: dict[str, Any] = {
            "dataset_id": dataset_id,
            "features": list(features),
            "targets": targets,
            **{key: value for key, value in optional.items() if value is not None},
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        response = self._request("POST", "/v1/analyses", json=body, headers=headers)
        return AnalysisPublic.model_validate_json(response.content)

    def analysis(self, analysis_id: str, *, wait: float = 0) -> AnalysisPublic:
        """The analysis now, or after up to `wait` s (≤ 60) if its status changes sooner."""
        params = {"wait": wait} if wait > 0 else {}
        timeout = self._http.timeout.read
        extended = httpx.Timeout(None if timeout is None else timeout + wait)
        response = self._request(
            "GET", f"/v1/analyses/{analysis_id}", params=params, timeout=extended
        )
        return AnalysisPublic.model_validate_json(response.content)

    def wait_analysis(
        self, analysis_id: str, timeout: float | None = None, *, on_update: Any = None
    ) -> AnalysisPublic:
        """Long-poll until the analysis is terminal; `on_update(analysis)` sees each state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = 60.0 if deadline is None else deadline - time.monotonic()
            analysis = self.analysis(analysis_id, wait=max(0.0, min(60.0, remaining)))
            if on_update is not None:
                on_update(analysis)
            if analysis.is_terminal:
                return analysis
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"analysis {analysis_id} is still {analysis.status} after {timeout} s",
                    details={"status": analysis.status},
                )

    def analysis_results(
        self, analysis_id: str, *, layer: Sequence[str] = ()
    ) -> AnalysisResultsPublic:
        """Per layer: δ grid, LFR, RDF, peaks, LFR limit (partial while it runs)."""
        params = {"layer": list(layer)}
        response = self._request("GET", f"/v1/analyses/{analysis_id}/results", params=params)
        return AnalysisResultsPublic.model_validate_json(response.content)

    def analysis_results_csv(self, analysis_id: str, *, layer: Sequence[str] = ()) -> str:
        """The curves as CSV text: layer, delta, inverse_delta, lfr, rdf, e_low, e_high."""
        params = {"layer": list(layer)}
        return self._request("GET", f"/v1/analyses/{analysis_id}/results.csv", params=params).text

    def cancel_analysis(self, analysis_id: str) -> AnalysisPublic:
        response = self._request("POST", f"/v1/analyses/{analysis_id}/cancel")
        return AnalysisPublic.model_validate_json(response.content)

    def delete_analysis(self, analysis_id: str) -> None:
        self._request("DELETE", f"/v1/analyses/{analysis_id}")

    def analyses(self, *, limit: int = 50, cursor: str | None = None) -> AnalysesPublic:
        """One page of your analyses, newest first."""
        params: dict[str, Any] = {"limit": limit}
        if cursor is not None:
            params["cursor"] = cursor
        response = self._request("GET", "/v1/analyses", params=params)
        return AnalysesPublic.model_validate_json(response.content)

    def iter(self, **filters: Any) -> Iterator[ExperimentSummary]:
        """Every experiment matching the filters, following cursors."""
        cursor = None
        while True:
            page = self.list(cursor=cursor, **filters)
            yield from page.data
            if page.next_cursor is None:
                return
            cursor = page.next_cursor


def spec_body(spec: SpecLike) -> dict[str, Any]:
    """The JSON body for a spec given as a model, a mapping or a file."""
    if isinstance(spec, ExperimentSpec):
        return spec.model_dump(mode="json")
    if isinstance(spec, str | Path):
        return load_spec(spec).model_dump(mode="json")
    return dict(spec)


def parse_event_stream(lines: Iterable[str]) -> Iterator[tuple[str, str, str | None]]:
    """(event, data, id) of each event in a text/event-stream; comments are skipped."""
    event, event_id = "message", None
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield event, "\n".join(data), event_id
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)
        elif name == "id":
            event_id = value


def error_from_event(data: str) -> DfpError:
    """The typed error an `error` event stands for."""
    try:
        body = json.loads(data)
        error, status = body["error"], int(body.get("status", 500))
        code, message, details = error["code"], error["message"], error.get("details")
    except (ValueError, KeyError, TypeError):
        return ServiceUnavailableError(f"the event stream failed: {data[:200]}")
    cls = ERRORS_BY_CODE.get(code) or ERRORS_BY_STATUS.get(status, DfpError)
    return cls(message, details=details, code=code, status_code=status)


def error_from_response(response: httpx.Response) -> DfpError:
    """The typed error for a non-2xx response, with the server's code, message and details."""
    try:
        error = response.json()["error"]
        code, message, details = error["code"], error["message"], error.get("details")
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", response.text[:500] or response.reason_phrase, None
    cls = ERRORS_BY_CODE.get(code) or ERRORS_BY_STATUS.get(response.status_code, DfpError)
    typed = cls(message, details=details, code=code, status_code=response.status_code)
    retry_after = response.headers.get("retry-after", "")
    if isinstance(typed, RateLimitedError) and retry_after.isdigit():
        typed.retry_after = float(retry_after)
    return typed
