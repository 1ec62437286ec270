"""The extension's REST API over a real Jupyter server (pytest-jupyter) and two real edges."""

from __future__ import annotations

import json

import pytest

from jupyter_rapha.protocol.contract import TERMINAL_STATES

pytestmark = pytest.mark.slow

GOOD_CELL = ("import torch\nfor epoch in range(rapha.epochs):\n    for b in rapha.loader(batch_size=4):\n        pass\n"
             "    rapha.log(loss=1.0 / (epoch + 1))\nrapha.save({'w': torch.zeros(2)})\n")
UNKNOWN_JOB = "0" * 32
ROUTES = [("GET", "edges"), ("GET", "datasets"), ("GET", "policy"), ("GET", "jobs"), ("POST", "jobs"),
          ("GET", f"jobs/{UNKNOWN_JOB}"), ("DELETE", f"jobs/{UNKNOWN_JOB}"), ("GET", f"jobs/{UNKNOWN_JOB}/edge"),
          ("GET", f"jobs/{UNKNOWN_JOB}/receipt"), ("GET", f"jobs/{UNKNOWN_JOB}/metrics"),
          ("GET", f"jobs/{UNKNOWN_JOB}/weights"), ("GET", f"jobs/{UNKNOWN_JOB}/verify"),
          ("GET", f"jobs/{UNKNOWN_JOB}/events")]


async def call(jp_fetch, method, route, body=None, **kwargs):
    extra = {"body": json.dumps(body)} if body is not None else ({"body": "{}"} if method == "POST" else {})
    response = await jp_fetch("rapha", "api", *route.split("/"), method=method, raise_error=False, **extra, **kwargs)
    data = json.loads(response.body) if response.headers.get("Content-Type", "").startswith("application/json") \
        and response.body else None
    return response.code, data


async def submit(jp_fetch, **body):
    code, data = await call(jp_fetch, "POST", "jobs", {"code": GOOD_CELL, "budget": 8, **body})
    assert code == 202, data
    return data["jobs"]


@pytest.mark.parametrize("method,route", ROUTES)
async def test_no_token_no_access(jp_fetch, method, route):
    for headers in ({"Authorization": ""}, {"Authorization": "token wrong"}):
        code, _ = await call(jp_fetch, method, route, headers=headers)
        assert code in (401, 403), (method, route, headers, code)


async def test_edges_report_health_key_and_attestation(jp_fetch, edge_config):
    code, data = await call(jp_fetch, "GET", "edges")
    assert code == 200
    by_name = {e["name"]: e for e in data["edges"]}
    assert set(by_name) == {"north", "south"}
    for entry, pinned in zip(by_name.values(), edge_config["edges"], strict=True):
        assert entry["healthy"] and entry["catalog"] == "verified"
        assert entry["public_key"] == pinned["public_key"]
        assert entry["attestation"]["unsafe"] is True  # demo edges offer only the software stand-in
    assert "cxr-north" in by_name["north"]["datasets"] and "cxr-north" not in by_name["south"]["datasets"]


async def test_policy_of_an_edge_verified_for_the_dry_run(jp_fetch):
    from jupyter_rapha.protocol.policy import PolicyBundle

    code, data = await call(jp_fetch, "GET", "policy", params={"site": "north"})
    assert code == 200 and data["site"] == "north" and data["researcher"]["roles"]
    assert PolicyBundle.from_texts(data["modules"], data["data_json"]).digest == data["bundle_sha256"]
    assert (await call(jp_fetch, "GET", "policy"))[0] == 400
    assert (await call(jp_fetch, "GET", "policy", params={"site": "nowhere"}))[0] == 404


async def test_datasets_merged_across_edges(jp_fetch):
    code, data = await call(jp_fetch, "GET", "datasets")
    assert code == 200 and data["refused"] == {}
    by_name = {d["name"]: d for d in data["datasets"]}
    assert by_name["synthetic-cxr"]["edges"] == ["north", "south"]
    assert by_name["cxr-north"]["edges"] == ["north"] and by_name["cxr-south"]["edges"] == ["south"]
    entry = by_name["synthetic-cxr"]
    assert set(entry["schema"]) == {"image", "finding"}
    assert entry["cohort_band"] and entry["policy_summary"] and entry["price_per_record"] is not None
    assert isinstance(entry["offers"]["north"]["synthetic_seed"], int)


@pytest.mark.parametrize("body,fix", [
    ({}, "dataset is required"),
    ({"dataset": "synthetic-cxr", "code": "x=1"}, "budget is required"),
    ({"dataset": "synthetic-cxr", "code": "x=1", "budget": 0}, "budget must be a whole number"),
    ({"dataset": "synthetic-cxr", "code": "x=1", "budget": 4, "sites": "some"}, "sites may only be"),
    ({"dataset": "synthetic-cxr", "code": "x=1", "budget": 4, "colour": "red"}, "unknown field(s) colour"),
    ({"dataset": "synthetic-cxr", "code": "x=1", "budget": 4}, "choose one with site=NAME"),
])
async def test_bad_input_400_says_what_to_fix(jp_fetch, body, fix):
    code, data = await call(jp_fetch, "POST", "jobs", body)
    assert code == 400, data
    assert fix in data["error"]["message"]


async def test_body_not_json_400(jp_fetch):
    response = await jp_fetch("rapha", "api", "jobs", method="POST", body="{nope", raise_error=False)
    assert response.code == 400 and "not JSON" in json.loads(response.body)["error"]["message"]


@pytest.mark.parametrize("method,route", [r for r in ROUTES if "jobs/" in r[1] and not r[1].endswith("events")])
async def test_unknown_job_404(jp_fetch, method, route):
    code, data = await call(jp_fetch, method, route)
    assert code == 404 and "no job" in data["error"]["message"]


async def test_unknown_dataset_and_site_404(jp_fetch):
    code, data = await call(jp_fetch, "POST", "jobs", {"dataset": "nothing-here", "code": "x=1", "budget": 4})
    assert code == 404 and "GET /rapha/api/datasets" in data["error"]["message"]
    code, data = await call(jp_fetch, "POST", "jobs", {"dataset": "cxr-north", "code": "x=1", "budget": 4,
                                                       "site": "south"})
    assert code == 404 and "offers no dataset" in data["error"]["message"]


async def test_budget_over_published_limit_403_with_reasons(jp_fetch):
    code, data = await call(jp_fetch, "POST", "jobs", {"dataset": "cxr-south", "code": "x=1", "budget": 25})
    assert code == 403 and data["error"]["kind"] == "BudgetDenied"
    assert data["error"]["reasons"] == ["edge south allows at most 20 records per job"]


async def test_denied_job_403_with_reasons(jp_fetch):
    [job] = await submit(jp_fetch, dataset="cxr-north", fields=["image", "PatientName"])
    status = await wait_final(jp_fetch, job["job_id"])
    assert status["state"] == "denied" and status["site"] == "north"
    for what in ("receipt", "weights", "metrics", "verify"):
        code, data = await call(jp_fetch, "GET", f"jobs/{job['job_id']}/{what}")
        assert code == 403, (what, data)
        assert any("PatientName" in reason for reason in data["error"]["reasons"]), data


async def wait_final(jp_fetch, job_id):
    import asyncio

    try:
        async with asyncio.timeout(120):
            while True:
                code, status = await call(jp_fetch, "GET", f"jobs/{job_id}")
                assert code == 200, status
                if status["state"] in TERMINAL_STATES:  # the contract's: held is not final
                    return status
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"job {job_id} did not finish") from None


async def test_a_short_job_id_is_enough(jp_fetch):
    [job] = await submit(jp_fetch, dataset="cxr-north", fields=["image", "PatientName"])
    await wait_final(jp_fetch, job["job_id"])
    short = job["job_id"][:8]
    code, status = await call(jp_fetch, "GET", f"jobs/{short}")
    assert code == 200 and status["job_id"] == job["job_id"] and status["site"] == "north"
    code, data = await call(jp_fetch, "GET", f"jobs/{short}/receipt")
    assert code == 403 and any("PatientName" in reason for reason in data["error"]["reasons"]), data
    code, data = await call(jp_fetch, "GET", f"jobs/{'0' * 8}")
    assert code == 404 and "no job" in data["error"]["message"]
