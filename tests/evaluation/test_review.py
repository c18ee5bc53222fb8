"""Human review: the verdict store, the review API (bad input gets 4xx) and the page in headless Chromium."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.net import uvicorn_in_thread

from xraydet.errors import XrayDetError
from xraydet.evaluation.gate import check_gate
from xraydet.evaluation.report import load_report
from xraydet.evaluation.review.server import create_review_app
from xraydet.evaluation.review.store import VerdictStore

CHROMIUM = Path("/usr/bin/chromium")


def items(client: TestClient) -> list[dict]:
    return client.get("/api/items").json()["items"]


def test_sample_is_seeded(label_report_dir: Path):
    a = [i["id"] for i in items(TestClient(create_review_app(label_report_dir, n=5, seed=0)))]
    b = [i["id"] for i in items(TestClient(create_review_app(label_report_dir, n=5, seed=0)))]
    c = [i["id"] for i in items(TestClient(create_review_app(label_report_dir, n=5, seed=1)))]
    assert a == b and len(set(a)) == 5 and a != c
    assert len(items(TestClient(create_review_app(label_report_dir, n=500)))) == 9  # all there are


def test_verdicts_are_saved_at_once_and_survive_a_restart(label_report_dir: Path):
    client = TestClient(create_review_app(label_report_dir, n=6))
    first, second = (i["id"] for i in items(client)[:2])
    r = client.post(f"/api/items/{first}/verdict", json={"verdict": "correct"})
    assert r.status_code == 200 and r.json()["counts"]["reviewed"] == 1
    on_disk = json.loads((label_report_dir / "review" / "verdicts.json").read_text())
    assert on_disk["verdicts"][first]["verdict"] == "correct"
    assert on_disk["report_id"] == load_report(label_report_dir).report_id
    client.post(f"/api/items/{second}/verdict", json={"verdict": "missed_threat"})
    client.post(
        f"/api/items/{first}/verdict", json={"verdict": "wrong"}
    )  # a changed mind replaces the verdict
    again = TestClient(create_review_app(label_report_dir, n=6)).get("/api/items").json()
    assert again["verdicts"] == {first: "wrong", second: "missed_threat"}
    assert again["counts"] == {"reviewed": 2, "correct": 0, "wrong": 1, "missed_threat": 1}
    gate = {c.name: c for c in check_gate(label_report_dir).criteria}
    assert gate["predictions reviewed"].value == 2 and gate["review approval share"].value == 0.0


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("post", "/api/items/999999/verdict", {"verdict": "correct"}, 404),
        ("post", "/api/items/{id}/verdict", {"verdict": "maybe"}, 422),
        ("post", "/api/items/{id}/verdict", {}, 422),
        ("post", "/api/items/{id}/verdict", "not json", 422),
        ("post", "/api/items/{id}/verdict", {"verdict": "correct", "note": "x" * 5000}, 422),
        ("get", "/api/items/nope/image", None, 404),
        ("get", "/api/items/..%2F..%2Fetc%2Fpasswd/image", None, 404),
    ],
)
def test_bad_input_gets_4xx(label_report_dir: Path, method, path, body, status):
    client = TestClient(create_review_app(label_report_dir, n=3), raise_server_exceptions=False)
    path = path.format(id=items(client)[0]["id"])
    if method == "get":
        r = client.get(path)
    elif isinstance(body, str):
        r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status
    assert (
        not (label_report_dir / "review" / "verdicts.json").exists()
        or not json.loads((label_report_dir / "review" / "verdicts.json").read_text())["verdicts"]
    )


def test_image_and_page_are_served(label_report_dir: Path):
    client = TestClient(create_review_app(label_report_dir, n=2))
    item = items(client)[0]
    r = client.get(item["image_url"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    page = client.get("/")
    assert page.status_code == 200 and "review.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no external assets
    assert client.get("/static/review.js").status_code == 200


def test_store_refuses_verdicts_of_another_report(label_report_dir: Path):
    VerdictStore.open_or_create(label_report_dir / "review", "another")
    with pytest.raises(XrayDetError, match="holds verdicts for report another"):
        create_review_app(label_report_dir)


def test_damaged_verdicts_file_is_named(label_report_dir: Path):
    (label_report_dir / "review").mkdir()
    (label_report_dir / "review" / "verdicts.json").write_text(
        '{"report_id": "x", "verdicts": {"1": {"verdict": "?"}}}'
    )
    with pytest.raises(XrayDetError, match=r"verdicts\.json: not a readable verdicts file"):
        VerdictStore.open(label_report_dir / "review")


def test_concurrent_verdicts_and_reads_never_fail(label_report_dir: Path):
    """Verdict POSTs add entries while GETs list them (the server runs both in its thread pool): every answer
    is a 200, and the counts a GET returns match the verdicts it returns."""
    import sys
    import threading

    import httpx

    base = [json.loads(x) for x in (label_report_dir / "predictions.jsonl").read_text().splitlines()]
    records = [base[i % len(base)] | {"id": f"{i:06d}"} for i in range(400)]
    (label_report_dir / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    app = create_review_app(label_report_dir, n=len(records))
    ids = [r["id"] for r in records]
    failures: list[str] = []
    done = threading.Event()

    def post(chunk: list[str]) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for item_id in chunk:
                r = client.post(f"/api/items/{item_id}/verdict", json={"verdict": "correct"})
                if r.status_code != 200:
                    failures.append(f"POST {r.status_code} {r.text[:200]}")

    def get() -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            while not done.is_set():
                r = client.get("/api/items")
                if r.status_code != 200:
                    failures.append(f"GET {r.status_code} {r.text[:200]}")
                elif r.json()["counts"]["reviewed"] != len(r.json()["verdicts"]):
                    failures.append(
                        f"GET counts {r.json()['counts']} for {len(r.json()['verdicts'])} verdicts"
                    )

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, so an unlocked read meets a write
    try:
        with uvicorn_in_thread(app, "review server", timeout_s=20) as url:
            posters = [threading.Thread(target=post, args=(ids[k::6],)) for k in range(6)]
            getters = [threading.Thread(target=get) for _ in range(6)]
            for t in posters + getters:
                t.start()
            for t in posters:
                t.join(120)
            done.set()
            for t in getters:
                t.join(60)
    finally:
        sys.setswitchinterval(interval)
    assert not failures, failures[:3]
    assert VerdictStore.open(label_report_dir / "review").counts()["reviewed"] == len(records)


@pytest.fixture
def review_server(label_report_dir: Path) -> Iterator[str]:
    """The real review app under uvicorn on a free loopback port, in a thread."""
    with uvicorn_in_thread(create_review_app(label_report_dir, n=6), "review server", timeout_s=20) as url:
        yield url


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian chromium is not installed (apt-get install chromium)"
)
def test_review_page_in_headless_chromium(review_server: str, label_report_dir: Path):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page()
            page.goto(review_server)
            page.wait_for_selector("body[data-ready='1']")
            expect(page.locator("#progress")).to_have_text("0 / 6 reviewed")
            data = page.evaluate("fetch('/api/items').then(r => r.json())")
            first = data["items"][0]
            expect(page.locator("#overlay rect.pred")).to_have_count(len(first["pred"]))
            page.keyboard.press("g")  # labels on
            expect(page.locator("#overlay rect.gt")).to_have_count(len(first["gt"]))

            marked = {}
            for n, (key, verdict) in enumerate(
                [("c", "correct"), ("w", "wrong"), ("m", "missed_threat")], start=1
            ):
                marked[page.locator("#item-info").get_attribute("data-item-id")] = verdict
                page.keyboard.press(key)
                expect(page.locator("#progress")).to_have_text(f"{n} / 6 reviewed")
            on_disk = json.loads((label_report_dir / "review" / "verdicts.json").read_text())
            assert {k: v["verdict"] for k, v in on_disk["verdicts"].items()} == marked

            page.reload()  # as if the browser had been closed: nothing lost, resume where we stopped
            page.wait_for_selector("body[data-ready='1']")
            expect(page.locator("#progress")).to_have_text("3 / 6 reviewed")
            expect(page.locator("#item-info")).to_contain_text("item 4 of 6")
            page.keyboard.press("ArrowLeft")
            expect(page.locator("#current-verdict")).to_have_attribute("data-verdict", "missed_threat")
            page.keyboard.press("ArrowLeft")
            page.keyboard.press("ArrowLeft")
            expect(page.locator("#item-info")).to_contain_text("item 1 of 6")
            expect(page.locator("#current-verdict")).to_have_attribute("data-verdict", "correct")
            page.keyboard.press("ArrowRight")
            page.keyboard.press("c")  # change item 2 from wrong to correct
            expect(page.locator("#status")).to_contain_text("saved")
            expect(page.locator("#counts")).to_contain_text("correct 2")
        finally:
            browser.close()
    counts = VerdictStore.open(label_report_dir / "review").counts()
    assert counts == {"reviewed": 3, "correct": 2, "wrong": 0, "missed_threat": 1}


def test_a_report_or_predictions_file_that_is_not_utf8_is_named(label_report_dir: Path):
    from xraydet.evaluation.review.server import read_records

    (label_report_dir / "predictions.jsonl").write_bytes(b'{"id": "\xff"}\n')
    with pytest.raises(XrayDetError, match=r"predictions\.jsonl:1: not UTF-8 text: byte 0xff"):
        read_records(label_report_dir)
    (label_report_dir / "report.json").write_bytes(b'{"report_id": "\xff"}')
    with pytest.raises(XrayDetError, match=r"report\.json: not a valid evaluation report"):
        load_report(label_report_dir)
