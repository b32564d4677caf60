"""The HTTP server, run for real (uvicorn on 127.0.0.1, a free port, in a thread): every route, the API
key, reloading, and every bad request answered by a clear JSON 4xx while the server keeps answering;
the batcher alone; `resprompt serve` startup errors (one line, exit 2); a bounded schemathesis run."""

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn

from resprompt.cli import main
from resprompt.serving.batcher import Batcher, Busy
from resprompt.serving.config import BatchPolicy, ServeConfig
from resprompt.serving.registry import PromptRegistry
from resprompt.serving.server import bind, create_app
from resprompt.tasks.superglue import get_task
from serving_prompts import make_ours, standard_prompts

KEY = "k3y-for-tests"
AUTH = {"Authorization": f"Bearer {KEY}"}
RTE = {"premise": "A farmer sold the house.", "hypothesis": "A house was sold."}


class ServerThread:
    """A real uvicorn server for ``app`` on 127.0.0.1 and a free port, in a thread."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))

    def __enter__(self) -> str:
        sock = bind("127.0.0.1", 0)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def served(tiny_model_dirs, tmp_path_factory):
    """(base url, registry, prompts folder, spare prompts): cb + rte served, with an API key."""
    tmp = tmp_path_factory.mktemp("server")
    spare = tmp / "spare"
    standard_prompts(tiny_model_dirs["bert"], spare)
    folder = tmp / "prompts"
    for name in ("cb", "rte"):
        shutil.copytree(spare / name, folder / name)
    cfg = ServeConfig(model=tiny_model_dirs["bert"], prompts=str(folder), max_inputs=8, max_body_bytes=20_000,
                      max_text_chars=2_000, max_wait_ms=20, timeout_s=20)
    registry = PromptRegistry.load(cfg.model, folder, cfg.registry_options())
    with ServerThread(create_app(registry, cfg, api_key=KEY)) as url:
        yield url, registry, folder, spare


@pytest.fixture
def client(served):
    with httpx.Client(base_url=served[0], headers=AUTH, timeout=30) as c:
        yield c


def test_binds_loopback_by_default():
    assert ServeConfig(model="m", prompts="p").host == "127.0.0.1"


@pytest.mark.parametrize("field, value, message", [
    ("timeout_s", float("nan"), "timeout_s must be a positive finite number, got nan"),  # every route answered 408
    ("timeout_s", float("inf"), "timeout_s must be a positive finite number, got inf"),
    ("max_wait_ms", float("nan"), "max_wait_ms must be a finite number >= 0, got nan"),
    ("max_inputs", 0, "max_inputs must be a positive finite number, got 0"),
    ("max_queue", 16, "max_queue=16 is below max_inputs=64"),  # 20 records: 503 forever on an idle server
])
def test_impossible_serve_settings_are_refused(field, value, message):
    from resprompt.training.runconfig import ConfigError

    with pytest.raises(ConfigError, match=re.escape(message)):
        ServeConfig(model="m", prompts="p", **{field: value})


def test_healthz_needs_no_key(served):
    r = httpx.get(served[0] + "/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok", "prompts": 2}


@pytest.mark.parametrize("path", ["/v1/prompts", "/metrics", "/openapi.json", "/docs"])
@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer"])
def test_every_route_but_healthz_needs_the_key(served, path, header):
    r = httpx.get(served[0] + path, headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and "API key" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("path, body", [("/v1/predict", {"prompt": "rte", "inputs": [RTE]}), ("/v1/reload", None)])
@pytest.mark.parametrize("header", [None, "Bearer wrong"])
def test_post_routes_need_the_key(served, path, body, header):
    r = httpx.post(served[0] + path, json=body, headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and "API key" in r.json()["detail"]


def test_prompts_lists_name_kind_labels_n_backbone(client, served):
    r = client.get("/v1/prompts")
    assert r.status_code == 200
    prompts = {p["name"]: p for p in r.json()["prompts"]}
    assert set(prompts) == {"cb", "rte"}
    assert prompts["cb"]["kind"] == "classification" and prompts["cb"]["n"] == 3
    assert prompts["cb"]["labels"] == ["entailment", "contradiction", "neutral"]
    assert prompts["rte"]["backbone"] == served[1].backbone.config._name_or_path


def test_predict_returns_what_the_registry_predicts(client, served):
    records = [RTE, {"premise": "The river missed the train.", "hypothesis": "Nobody missed the train.",
                     "label": "not_entailment"}]
    r = client.post("/v1/predict", json={"prompt": "rte", "inputs": records})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["prompt"] == "rte" and len(body["predictions"]) == 2
    expected = served[1].predict([("rte", rec) for rec in records])
    for got, want in zip(body["predictions"], expected):
        assert got["label"] == want["label"]
        assert all(abs(got["scores"][k] - want["scores"][k]) <= 1e-6 for k in want["scores"])


def test_concurrent_requests_share_batches(served):
    url, registry = served[:2]

    async def run():
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30) as c:
            bodies = [{"prompt": "rte" if i % 2 else "cb", "inputs": [RTE]} for i in range(16)]
            return await asyncio.gather(*(c.post("/v1/predict", json=b) for b in bodies))

    before = _metric(httpx.get(url + "/metrics", headers=AUTH).text, "resprompt_batch_rows_count")
    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    want = {name: registry.predict([(name, RTE)])[0]["label"] for name in ("cb", "rte")}
    assert all(r.json()["predictions"][0]["label"] == want[r.json()["prompt"]] for r in responses)
    batches = _metric(httpx.get(url + "/metrics", headers=AUTH).text, "resprompt_batch_rows_count") - before
    assert batches < 16  # rows of concurrent requests (and of both prompts) ran together


def _metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name + labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


LONG = "word " * 500
BAD = [  # (content, headers, status, words in the message)
    ('{"prompt": "rte", "inputs": [', {"content-type": "application/json"}, 400, "malformed JSON"),
    ("not json at all", {"content-type": "application/json"}, 400, "malformed JSON"),
    ({"prompt": "nope", "inputs": [RTE]}, {}, 404, "unknown prompt 'nope'"),
    ({"prompt": "../rte", "inputs": [RTE]}, {}, 404, "unknown prompt '../rte'"),
    ({"prompt": "/etc/passwd", "inputs": [RTE]}, {}, 404, "unknown prompt"),
    ({"prompt": "rte", "inputs": [{"premise": "x"}]}, {}, 422, "inputs[0]: field 'hypothesis' missing"),
    ({"prompt": "rte", "inputs": [RTE, {"premise": 3, "hypothesis": "y"}]}, {}, 422, "inputs[1]: field 'premise'"),
    ({"prompt": "rte", "inputs": [{**RTE, "label": "maybe"}]}, {}, 422, "label 'maybe' not in"),
    ({"prompt": "rte", "inputs": ["just text"]}, {}, 422, "inputs.0"),
    ({"prompt": "rte", "inputs": RTE}, {}, 422, "inputs"),
    ({"prompt": "rte", "inputs": []}, {}, 422, "at least 1 item"),
    ({"prompt": "rte"}, {}, 422, "inputs: Field required"),
    ({"prompt": "rte", "inputs": [RTE], "extra": 1}, {}, 422, "extra: Extra inputs are not permitted"),
    ({"prompt": "rte", "inputs": [RTE] * 9}, {}, 422, "9 inputs: at most 8 per request"),
    ({"prompt": "rte", "inputs": [{**RTE, "premise": "x" * 2001}]}, {}, 422, "inputs[0].premise: 2001 characters"),
    # a lone surrogate is valid JSON and not text: the tokenizer raised TypeError, answered 500
    ('{"prompt": "rte", "inputs": [{"premise": "a\\ud800b", "hypothesis": "x"}]}', {"content-type": "application/json"},
     422, "inputs[0].premise: not valid Unicode text: a lone surrogate '\\ud800' at character 1"),
    ({"prompt": "rte", "inputs": [{"premise": LONG, "hypothesis": LONG} for _ in range(8)]}, {}, 413,
     "request body too large"),
    ("x" * 30_000, {"content-type": "application/json"}, 413, "limit is 20000 bytes"),
    ('{"prompt": "rte", "inputs": [' + "[" * 5000 + "]" * 5000 + "]}", {"content-type": "application/json"},
     400, "error parsing the body"),
    ("prompt=rte", {"content-type": "application/x-www-form-urlencoded"}, 422, "invalid request"),
]


@pytest.mark.parametrize("content, headers, status, message", BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_requests_get_a_clear_json_4xx_and_the_server_keeps_answering(client, content, headers, status,
                                                                          message):
    if isinstance(content, dict):
        r = client.post("/v1/predict", json=content)
    else:
        r = client.post("/v1/predict", content=content.encode(), headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert message in r.json()["detail"]
    assert client.get("/healthz").status_code == 200
    assert client.post("/v1/predict", json={"prompt": "rte", "inputs": [RTE]}).status_code == 200


def test_wrong_method_and_route(client):
    assert client.get("/v1/predict").status_code == 405
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/prompts/../../etc/passwd").status_code == 404
    assert client.get("/healthz").status_code == 200


def test_reload_serves_a_new_folder_and_skips_a_broken_one(client, served, caplog):
    _, _, folder, spare = served
    shutil.copytree(spare / "topic", folder / "topic")
    r = client.post("/v1/reload")
    assert r.status_code == 200 and r.json()["added"] == ["topic"] and r.json()["skipped"] == {}
    assert client.post("/v1/predict", json={"prompt": "topic", "inputs": [{"text": "goal"}]}).status_code == 200
    saved = (folder / "cb" / "prompt.safetensors").read_bytes()
    (folder / "cb" / "prompt.safetensors").write_bytes(b"broken")
    try:
        r = client.post("/v1/reload").json()
        assert set(r["skipped"]) == {"cb"} and "prompt.safetensors" in r["skipped"]["cb"]
        logged = [m.getMessage() for m in caplog.records if m.levelname == "ERROR"]
        assert any("cb" in m and "prompt.safetensors" in m for m in logged), logged  # the skip is logged
        assert r["served"] == ["rte", "topic"] and r["removed"] == ["cb"]
        assert client.post("/v1/predict", json={"prompt": "cb", "inputs": [RTE]}).status_code == 404
        assert client.post("/v1/predict", json={"prompt": "rte", "inputs": [RTE]}).status_code == 200
        assert client.get("/healthz").json()["prompts"] == 2
    finally:
        (folder / "cb" / "prompt.safetensors").write_bytes(saved)
        shutil.rmtree(folder / "topic")
        r = client.post("/v1/reload").json()
    assert r["served"] == ["cb", "rte"]


def test_metrics_count_requests_latency_and_batch_sizes(client):
    client.post("/v1/predict", json={"prompt": "rte", "inputs": [RTE, RTE]})
    client.post("/v1/predict", json={"prompt": "nope", "inputs": [RTE]})
    text = client.get("/metrics").text
    assert _metric(text, "resprompt_requests_total", '{route="/v1/predict",status="200"}') >= 1
    assert _metric(text, "resprompt_requests_total", '{route="/v1/predict",status="404"}') >= 1
    assert _metric(text, "resprompt_request_seconds_count", '{route="/v1/predict"}') >= 2
    assert _metric(text, "resprompt_batch_rows_sum") >= 2 and _metric(text, "resprompt_prompts") == 2


def test_schemathesis_finds_no_server_error(served):
    """A bounded property-based run over the OpenAPI schema (bodies that fit it and bodies that do not;
    predict bodies also sent with a served prompt's name, so records reach the task): no 5xx."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode

    schema = schemathesis.openapi.from_url(served[0] + "/openapi.json", headers=AUTH)
    calls = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/v1/reload":
            continue  # rescans the folder: covered above
        body = operation.path == "/v1/predict"
        for mode in GenerationMode if body else [GenerationMode.POSITIVE]:  # negative needs something to break

            @settings(max_examples=60 if body else 5, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case):
                responses = [case.call(headers=AUTH)]
                if isinstance(case.body, dict) and "prompt" in case.body:
                    case.body = {**case.body, "prompt": "rte"}
                    responses.append(case.call(headers=AUTH))
                for r in responses:
                    calls.append((case.operation.path, r.status_code))
                    assert r.status_code < 500, (case.as_curl_command(), r.text)

            check()
    codes = {code for p, code in calls if p == "/v1/predict"}
    assert len(calls) >= 150 and {404, 422} <= codes, sorted(codes)  # 422: records reached the task
    assert httpx.get(served[0] + "/healthz").status_code == 200


# ---------------------------------------------------------------------------- timeouts, a full queue
class SlowRegistry:
    """What the app needs of a registry, with a slow model."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def names(self):
        return ["slow"]

    def info(self):
        return []

    def get(self, name):
        return name

    def predict_each(self, pairs):
        time.sleep(self.seconds)
        return [{"label": "a", "scores": {"a": 1.0}} for _ in pairs]


def test_timeouts_and_a_full_queue_answer_504_and_503(tmp_path):
    cfg = ServeConfig(model="m", prompts=str(tmp_path), timeout_s=0.2, max_queue=2, max_inputs=1, max_batch_size=1,
                      max_wait_ms=0)
    with ServerThread(create_app(SlowRegistry(0.5), cfg)) as url:
        async def run():
            async with httpx.AsyncClient(base_url=url, timeout=30) as c:
                body = {"prompt": "slow", "inputs": [{"x": "y"}]}
                return await asyncio.gather(*(c.post("/v1/predict", json=body) for _ in range(6)))

        codes = sorted(r.status_code for r in asyncio.run(run()))
        assert set(codes) <= {503, 504} and 504 in codes
        assert httpx.get(url + "/healthz").status_code == 200


def test_a_body_that_trickles_in_gets_408_and_the_server_keeps_answering(tmp_path):
    cfg = ServeConfig(model="m", prompts=str(tmp_path), timeout_s=0.5)
    with ServerThread(create_app(SlowRegistry(0.0), cfg)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"prompt\":")  # and nothing more
            start, reply = time.monotonic(), b""
            while b"\r\n\r\n" not in reply or not reply.endswith(b"}"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in reply, reply
        assert time.monotonic() - start < 5
        assert httpx.get(url + "/healthz").status_code == 200


def test_strict_length_answers_422_over_http(tiny_model_dirs, tmp_path):
    standard_prompts(tiny_model_dirs["bert"], tmp_path / "p")
    cfg = ServeConfig(model=tiny_model_dirs["bert"], prompts=str(tmp_path / "p"), strict_length=True, max_length=32)
    registry = PromptRegistry.load(cfg.model, tmp_path / "p", cfg.registry_options())
    with ServerThread(create_app(registry, cfg)) as url:
        long = {"premise": "word " * 60, "hypothesis": "A house was sold."}
        r = httpx.post(url + "/v1/predict", json={"prompt": "rte", "inputs": [RTE, long]}, timeout=30)
        assert r.status_code == 422 and "inputs[1]" in r.json()["detail"] and "--strict-length" in r.json()["detail"], r.text
        assert httpx.post(url + "/v1/predict", json={"prompt": "rte", "inputs": [RTE]}, timeout=30).status_code == 200


# ---------------------------------------------------------------------------- the batcher alone
def test_batcher_gathers_rows_of_concurrent_requests():
    batches = []

    def fn(rows):
        batches.append(list(rows))
        return [r * 10 if r >= 0 else ValueError(f"bad {r}") for r in rows]

    async def run():
        b = Batcher(fn, BatchPolicy(max_batch_size=4, max_wait_ms=50))
        b.start()
        try:
            results = await asyncio.gather(*(b.submit([i, i + 100]) for i in range(5)),
                                           b.submit([-1, 7]))
        finally:
            await b.stop()
        return results

    results = asyncio.run(run())
    assert results[:5] == [[i * 10, (i + 100) * 10] for i in range(5)]
    assert isinstance(results[5][0], ValueError) and results[5][1] == 70  # a bad row fails alone
    assert max(len(x) for x in batches) == 4 and len(batches) == 3  # 12 rows, 4 at a time


def test_batcher_times_out_drops_waiting_rows_and_refuses_when_full():
    ran = []

    def fn(rows):
        time.sleep(0.2)
        ran.extend(rows)
        return rows

    async def run():
        b = Batcher(fn, BatchPolicy(max_batch_size=1, max_wait_ms=0, max_queue=3))
        b.start()
        try:
            first = asyncio.ensure_future(b.submit(["a"]))
            await asyncio.sleep(0.05)  # "a" runs
            with pytest.raises(asyncio.TimeoutError):
                await b.submit(["b", "c"], timeout=0.05)
            with pytest.raises(Busy):
                await b.submit(["d", "e", "f", "g"])
            assert await first == ["a"]
            assert await b.submit(["h"], timeout=5) == ["h"]
        finally:
            await b.stop()

    asyncio.run(run())
    assert "a" in ran and "h" in ran and "c" not in ran  # "c" timed out while waiting: never run


def test_batcher_survives_a_failing_batch_function():
    calls = []

    def fn(rows):
        calls.append(rows)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return rows

    async def run():
        b = Batcher(fn, BatchPolicy(max_wait_ms=0))
        b.start()
        try:
            first = await b.submit([1])
            second = await b.submit([2])
        finally:
            await b.stop()
        return first, second

    first, second = asyncio.run(run())
    assert isinstance(first[0], RuntimeError) and second == [2]


def test_stopping_answers_every_waiting_and_running_row_at_once_with_503():
    """Before: stop() cancelled the batch being run, so its request waited its whole timeout (then 504), and
    the queued rows' Busy was answered as a 500 (internal error)."""
    from fastapi import HTTPException

    from resprompt.serving.server import _predictions

    def fn(rows):
        time.sleep(0.5)
        return rows

    async def run():
        b = Batcher(fn, BatchPolicy(max_batch_size=1, max_wait_ms=0))
        b.start()
        requests = [asyncio.ensure_future(b.submit([x], timeout=30)) for x in "abc"]
        await asyncio.sleep(0.1)  # "a" runs, "b" and "c" wait
        start = time.perf_counter()
        await b.stop()
        results = await asyncio.gather(*requests)
        return results, time.perf_counter() - start

    results, took = asyncio.run(run())
    assert all(isinstance(r[0], Busy) and "shutting down" in str(r[0]) for r in results) and took < 5
    with pytest.raises(HTTPException) as e:
        _predictions(results[0])
    assert e.value.status_code == 503


def test_a_client_that_leaves_before_any_response_is_no_server_error():
    """Before: an aborted upload (no response started) was counted as status 500."""
    from resprompt.serving.middleware import DISCONNECTED, RequestMetrics

    seen = []

    async def silent(scope, receive, send):  # as BodyLimit does when the client disconnects mid-body
        return None

    async def crash(scope, receive, send):
        raise RuntimeError("boom")

    async def run(app):
        m = RequestMetrics(app, lambda route, status, s: seen.append((route, status)), {"/v1/predict"})
        try:
            await m({"type": "http", "path": "/v1/predict"}, None, None)
        except RuntimeError:
            pass

    asyncio.run(run(silent))
    asyncio.run(run(crash))
    assert seen == [("/v1/predict", DISCONNECTED), ("/v1/predict", 500)] and DISCONNECTED == 499


def test_serve_lets_requests_in_flight_finish_when_stopped(tiny_model_dirs, tmp_path, monkeypatch):
    """Before: uvicorn cancelled them 5 s into a stop (a plain-text 500), though a request may wait
    --timeout-s (30 s by default) for its prediction."""
    import resprompt.serving.server as server_mod

    seen = {}

    class Capture:
        def __init__(self, config):
            seen["grace"] = config.timeout_graceful_shutdown

        def run(self, sockets):
            for sock in sockets:
                sock.close()

    monkeypatch.setattr(uvicorn, "Server", Capture)
    (tmp_path / "prompts").mkdir()
    cfg = ServeConfig(model=tiny_model_dirs["bert"], prompts=str(tmp_path / "prompts"), port=0, timeout_s=30)
    assert server_mod.serve(cfg) == 0 and seen["grace"] >= 30


# ---------------------------------------------------------------------------- `resprompt serve` startup
def _busy_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_serve_startup_errors_are_one_line_and_exit_2(tiny_model_dirs, tmp_path, capsys):
    folder = tmp_path / "prompts"
    folder.mkdir()
    (tmp_path / "empty.key").write_text("  \n")
    busy = _busy_port()
    model = tiny_model_dirs["bert"]
    cases = [
        (["--model", model, "--prompts", str(tmp_path / "missing")], "--prompts"),
        (["--model", str(tmp_path / "no-model"), "--prompts", str(folder), "--port", "0"], "backbone"),
        (["--model", model, "--prompts", str(folder), "--api-key-file", str(tmp_path / "none.key")], "api-key-file"),
        (["--model", model, "--prompts", str(folder), "--api-key-file", str(tmp_path / "empty.key")], "empty"),
        (["--model", model, "--prompts", str(folder), "--port", str(busy.getsockname()[1])], "cannot listen"),
        (["--model", model, "--prompts", str(folder), "--max-batch-size", "0"], "max_batch_size"),
        (["--prompts", str(folder)], "--model is required"),
    ]
    try:
        for argv, words in cases:
            assert main(["serve", *argv]) == 2, argv
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith("resprompt: error:") and words in err[0], (argv, err)
    finally:
        busy.close()


@pytest.mark.slow
def test_resprompt_serve_starts_answers_and_stops(tiny_model_dirs, tmp_path):
    folder = tmp_path / "prompts"
    make_ours(tiny_model_dirs["bert"], folder / "rte", get_task("RTE"), n=3)
    key = tmp_path / "key"
    key.write_text(KEY)
    key.chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "resprompt.cli", "serve", "--model", tiny_model_dirs["bert"],
                             "--prompts", str(folder), "--port", "0", "--api-key-file", str(key)],
                            stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for line in proc.stderr:
            found = re.search(r"serving 1 prompt\(s\) on http://127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port, "no startup line"
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        r = httpx.post(url + "/v1/predict", json={"prompt": "rte", "inputs": [RTE]}, headers=AUTH)
        assert r.status_code == 200 and json.loads(r.text)["predictions"][0]["label"] in ("entailment",
                                                                                          "not_entailment")
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C: uvicorn shuts down, then the CLI says "interrupted"
        code, rest = proc.wait(timeout=30), proc.stderr.read()
    assert code == 130 and "Traceback" not in rest and "resprompt: interrupted" in rest
