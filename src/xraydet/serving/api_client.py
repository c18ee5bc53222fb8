"""A client for the detection API and the seed's end-to-end API test (``xraydet api-test``).

The summary keeps the seed's ``test_yolo_with_threshold`` definitions so numbers stay comparable:

- **Overall Accuracy**: share of labelled images whose *top* returned item (highest confidence) has the
  class of the image's *first* label line. An image with no returned item counts as wrong.
- **Detection Rate**: share of images for which the API returned at least one item (any class, right or
  wrong).
- **Avg Detections**: returned items per image.
- **Threats Found**: images with at least one returned threat item (``is_threat`` from our API; for a
  seed-style API without it, a class listed in the data set's ``threats``); ``n_threat_images`` is how many
  images have a threat label.
- **False alarms** (with ``negatives``): threat-free images with at least one threat item returned.

Requests that fail are listed in ``errors`` and left out of every rate.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, Field

from xraydet.errors import XrayDetError

ProgressFn = Callable[[str, int, int], None]


class ApiError(XrayDetError):
    """The API is unreachable, unhealthy or answered something unexpected."""


class ApiClient:
    """Thin synchronous client for the endpoints of :mod:`xraydet.serving.app` (and the seed's API).

    Example:
        >>> with ApiClient("http://127.0.0.1:8000") as api:  # doctest: +SKIP
        ...     api.check_health()
        ...     api.detect(Path("scan.jpg").read_bytes(), "scan.jpg", conf=0.25)["total_count"]
    """

    def __init__(self, api_url: str, timeout_s: float = 60.0, api_key: str | None = None) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self.client = httpx.Client(base_url=self.api_url, timeout=timeout_s, headers=headers)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def check_health(self) -> dict[str, Any]:
        """``/health``'s body; raises :class:`ApiError` saying what is wrong if the API cannot serve."""
        try:
            resp = self.client.get("/health")
        except httpx.HTTPError as err:
            raise ApiError(
                f"API at {self.api_url} is not reachable ({err}); is `xraydet serve` running?"
            ) from err
        body = self._json_object(resp, "/health")
        if body.get("status") != "healthy" or not body.get("model_loaded"):
            raise ApiError(f"API at {self.api_url} is up but not ready: {body}")
        return dict(body)

    def models(self) -> dict[str, Any] | None:
        """``/v1/models``'s current model, or None for an API without that route (the seed's).

        Raises:
            ApiError: the API is unreachable or answered an error or something that is not a models body.
        """
        try:
            resp = self.client.get("/v1/models")
        except httpx.HTTPError as err:
            raise ApiError(f"{self.api_url}/v1/models: request failed ({err})") from err
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            raise ApiError(f"{self.api_url}/v1/models answered {resp.status_code}: {resp.text[:300]}")
        return self._json_object(resp, "/v1/models").get("current")

    def _json_object(self, resp: httpx.Response, route: str) -> dict[str, Any]:
        """``resp``'s body as a JSON object, or :class:`ApiError` naming the route and what came instead."""
        where = f"{self.api_url}{route} answered {resp.status_code}"
        try:
            body = resp.json()
        except ValueError as err:
            raise ApiError(f"{where} with non-JSON content: {resp.text[:200]!r}") from err
        if not isinstance(body, dict):
            raise ApiError(f"{where} with JSON that is not an object: {body!r:.200}; is this an xraydet API?")
        return body

    def detect(
        self,
        data: bytes,
        filename: str,
        conf: float = 0.25,
        iou: float | None = None,
        content_type: str = "application/octet-stream",
    ) -> dict[str, Any]:
        """POST one image to ``/v1/detect``; a 4xx/5xx raises :class:`ApiError` with the server's message."""
        params: dict[str, float] = {"conf_threshold": conf}
        if iou is not None:
            params["iou_threshold"] = iou
        try:
            resp = self.client.post(
                "/v1/detect", params=params, files={"file": (filename, data, content_type)}
            )
        except httpx.HTTPError as err:
            raise ApiError(f"{filename}: request failed ({err})") from err
        if resp.status_code != 200:
            raise ApiError(f"{filename}: API answered {resp.status_code}: {resp.text[:300]}")
        try:
            return dict(resp.json())
        except ValueError as err:
            raise ApiError(f"{filename}: API answered 200 but not JSON: {resp.text[:200]!r}") from err


class ClassAccuracy(BaseModel):
    correct: int
    total: int
    accuracy: float


class ApiTestReport(BaseModel):
    """What ``xraydet api-test`` prints and saves (definitions in the module docstring)."""

    api_url: str
    dataset: str
    split: str
    conf_threshold: float
    seed: int
    model: str | None = None
    model_version: str | None = None
    tta: str | None = None  # the server's test-time augmentation (None: an older server that does not say)
    n_images: int
    n_failed: int
    accuracy: float
    detection_rate: float
    avg_detections: float
    threats_found: int
    n_threat_images: int
    top_predicted_classes: dict[str, int]
    per_class: dict[str, ClassAccuracy]
    n_negatives: int = 0
    false_alarms: int = 0
    false_alarm_rate: float | None = None
    duration_s: float
    images_per_s: float
    errors: list[dict[str, str]] = Field(default_factory=list)


def _sample(images: list[Path], max_samples: int | None, seed: int) -> list[Path]:
    if max_samples is None or max_samples >= len(images):
        return images
    return sorted(random.Random(seed).sample(images, max_samples))


def _label_classes(image: Path) -> list[int]:
    """The class ids of ``image``'s label lines, in file order (empty when it has no labels)."""
    from xraydet.data.dataset import label_path_for, read_label_file

    label = label_path_for(image)
    if not label.exists():
        return []
    return [int(c) for c in read_label_file(label)[:, 0]]


def _is_threat(item: dict[str, Any], threat_names: set[str]) -> bool:
    if "is_threat" in item:
        return bool(item["is_threat"])
    return str(item.get("name", "")).lower() in threat_names


def _detect_each(
    api: ApiClient,
    images: list[Path],
    conf: float,
    stage: str,
    errors: list[dict[str, str]],
    progress: ProgressFn | None,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``(image, response)`` for each image the API answered; failures go to ``errors``, not the caller."""
    for i, image in enumerate(images):
        try:
            yield image, api.detect(image.read_bytes(), image.name, conf)
        except ApiError as err:
            errors.append({"image": str(image), "error": str(err)})
        finally:
            if progress:
                progress(stage, i + 1, len(images))


def run_api_test(
    api_url: str,
    dataset: str | Path,
    conf: float = 0.25,
    *,
    split: str = "val",
    max_samples: int | None = None,
    negatives: str | Path | None = None,
    seed: int = 0,
    timeout_s: float = 60.0,
    progress: ProgressFn | None = None,
) -> ApiTestReport:
    """Send a sample of ``dataset``'s labelled images (and ``negatives``) to the API and summarise.

    Raises:
        ApiError: the API is down or has no model (checked before any image is sent).
    """
    from xraydet.data.dataset import load_dataset
    from xraydet.evaluation.runner import negative_images

    ds = load_dataset(dataset)
    images = _sample(ds.images(split), max_samples, seed)
    # every image of the folder, whatever its layout, exactly as `xraydet eval --negatives` counts them
    neg_images = negative_images([negatives]) if negatives is not None else []
    threat_names = {t.lower() for t in (ds.threats or ds.names)}
    errors: list[dict[str, str]] = []
    top_counts: Counter[str] = Counter()
    per_total: Counter[str] = Counter()
    per_correct: Counter[str] = Counter()
    n_ok = n_detected = n_items = threats_found = n_threat_images = 0
    false_alarms = n_neg_ok = 0
    with ApiClient(api_url, timeout_s) as api:
        health = api.check_health()
        start = time.perf_counter()
        for image, body in _detect_each(api, images, conf, "labelled images", errors, progress):
            items = body.get("items", [])
            n_ok += 1
            n_items += len(items)
            n_detected += bool(items)
            threats_found += any(_is_threat(it, threat_names) for it in items)
            top = max(items, key=lambda it: it.get("confidence", 0.0)) if items else None
            if top is not None:
                top_counts[str(top.get("name"))] += 1
            classes = _label_classes(image)
            if not classes:
                continue
            first = classes[0]
            true_name = ds.names[first] if first < len(ds.names) else str(first)
            # any threat label counts, not only the first line's (an image may list a bottle before a knife)
            n_threat_images += any(c < len(ds.names) and ds.names[c].lower() in threat_names for c in classes)
            per_total[true_name] += 1
            per_correct[true_name] += top is not None and top.get("name") == true_name
        for _, body in _detect_each(api, neg_images, conf, "threat-free images", errors, progress):
            n_neg_ok += 1
            false_alarms += any(_is_threat(it, threat_names) for it in body.get("items", []))
        duration = time.perf_counter() - start
    n_labelled = sum(per_total.values())
    return ApiTestReport(
        api_url=api_url,
        dataset=str(dataset),
        split=split,
        conf_threshold=conf,
        seed=seed,
        model=health.get("model"),
        model_version=health.get("version"),
        tta=health.get("tta"),
        n_images=n_ok,
        n_failed=len(errors),
        accuracy=sum(per_correct.values()) / n_labelled if n_labelled else 0.0,
        detection_rate=n_detected / n_ok if n_ok else 0.0,
        avg_detections=n_items / n_ok if n_ok else 0.0,
        threats_found=threats_found,
        n_threat_images=n_threat_images,
        top_predicted_classes=dict(top_counts.most_common(10)),
        per_class={
            name: ClassAccuracy(
                correct=per_correct[name], total=per_total[name], accuracy=per_correct[name] / per_total[name]
            )
            for name in sorted(per_total)
        },
        n_negatives=n_neg_ok,
        false_alarms=false_alarms,
        false_alarm_rate=false_alarms / n_neg_ok if n_neg_ok else None,
        duration_s=round(duration, 3),
        images_per_s=(n_ok + n_neg_ok) / duration if duration > 0 else 0.0,
        errors=errors,
    )
