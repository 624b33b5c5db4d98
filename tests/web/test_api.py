"""Every endpoint through the real app (create_app + lifespan) on the tiny engine."""

from __future__ import annotations

MODEL = "tiny-llama-s0"


def test_healthz(client):
    assert client.get("/healthz").json() == {"status": "ok", "model": MODEL, "queue": 0}


def test_models_marks_the_loaded_model(client):
    models = client.get("/api/models").json()
    loaded = [m for m in models if m["loaded"]]
    assert loaded == [{"name": MODEL, "prepared": True, "loaded": True, "n_layers": 3,
                       "neurons_per_layer": 64, "arch": "llama"}]


def test_analysis_is_computed_by_a_job_then_served_from_the_store(client, helpers):
    first = client.post("/api/analyses", json={"prompt": helpers.PROMPT, "k": 4})
    assert first.status_code == 202
    job = helpers.wait_job(client, first.json()["job"]["id"])
    assert job["status"] == "done" and job["progress"] == 1.0 and job["url"].startswith("/a/")

    again = client.post("/api/analyses", json={"prompt": helpers.PROMPT, "k": 4})
    assert again.status_code == 200 and again.json()["status"] == "done"
    analysis = again.json()["analysis"]
    assert analysis["id"] == job["result_id"] and analysis["url"] == job["url"]
    result = analysis["result"]
    assert result["kind"] == "analysis" and result["prompt"] == helpers.PROMPT and result["k"] == 4
    assert len(result["nodes"]) == 3 * 4 and result["model"]["name"] == MODEL
    assert {"torch", "transformers", "engine_version", "dtype", "device"} <= set(result["repro"])

    stored = client.get(f"/api/analyses/{analysis['id']}").json()
    assert stored == analysis
    assert stored["request"]["prompt"] == helpers.PROMPT and stored["created_at"]


def test_recent_analyses_list(client, helpers):
    a = helpers.analyze(client, method="magnitude")
    b = helpers.analyze(client, prompt="the dog runs to the")
    recent = client.get("/api/analyses", params={"limit": 5}).json()
    assert [r["id"] for r in recent] == [b["id"], a["id"]]
    assert recent[1] == {"id": a["id"], "slug": a["slug"], "url": f"/a/{a['slug']}", "prompt": helpers.PROMPT,
                         "method": "magnitude", "created_at": a["created_at"]}
    assert len(client.get("/api/analyses", params={"limit": 1}).json()) == 1


def test_ablation_compares_baseline_and_ablated(client, helpers):
    analysis = helpers.analyze(client)
    top = [n["id"] for n in analysis["result"]["nodes"][:3]]
    response = client.post(f"/api/analyses/{analysis['id']}/ablations",
                           json={"neurons": top, "mode": "scale", "factor": 0.5, "continuation": 3})
    assert response.status_code == 200
    body = response.json()
    result = body["result"]
    assert result["kind"] == "ablation" and result["ablation"]["neurons"] == sorted(top, key=_neuron_order)
    assert result["ablation"]["mode"] == "scale" and result["ablation"]["factor"] == 0.5
    assert set(result) >= {"baseline", "ablated", "delta_prob", "kl", "target"}
    assert abs(result["baseline"]["target_prob"] - analysis["result"]["target"]["prob"]) < 1e-5
    assert body["id"]


def _neuron_order(text: str) -> tuple[int, int]:
    layer, index = text[1:].split(".N")
    return int(layer), int(index)


def test_neuron_endpoint_with_and_without_analysis(client, helpers):
    analysis = helpers.analyze(client)
    node = analysis["result"]["nodes"][0]
    plain = client.get(f"/api/models/{MODEL}/neurons/{node['id']}").json()
    assert plain["neuron"]["id"] == node["id"] and plain["activations"] is None and plain["impacts"] is None
    assert plain["neuron"]["write"]["top"] and "read_gate" in plain["neuron"]

    with_analysis = client.get(f"/api/models/{MODEL}/neurons/{node['id']}",
                               params={"analysis": analysis["id"]}).json()
    assert with_analysis["activations"]["tokens"] == analysis["result"]["tokens"]
    assert len(with_analysis["activations"]["activations"]) == len(analysis["result"]["tokens"])
    assert with_analysis["impacts"] == {"attribution": node["impact"]}


def test_job_resource(client, helpers):
    job_id = client.post("/api/analyses", json={"prompt": "one two three"}).json()["job"]["id"]
    job = helpers.wait_job(client, job_id)
    assert set(job) == {"id", "status", "phase", "progress", "message", "error", "queue_position",
                        "result_id", "url"}
    assert job["queue_position"] is None and job["error"] is None


def test_permalink_restores_view_state_and_its_ablation(client, helpers):
    analysis = helpers.analyze(client)
    ids = [n["id"] for n in analysis["result"]["nodes"][:2]]
    state = {"sel": ids, "abl": {"neurons": ids[:1], "mode": "zero", "factor": 0}, "thr": 0.25,
             "method": "attribution"}
    link = client.post("/api/permalinks", json={"analysis_id": analysis["id"], "state": state})
    assert link.status_code == 200
    slug = link.json()["slug"]
    assert link.json()["url"] == f"/a/{analysis['slug']}?v={slug}"
    again = client.post("/api/permalinks", json={"analysis_id": analysis["id"], "state": state}).json()
    assert again["slug"] == slug  # content-addressed

    view = client.get(f"/a/{analysis['slug']}.json", params={"v": slug}).json()
    assert view["analysis"] == analysis
    assert view["state"]["sel"] == sorted(ids, key=_neuron_order) and view["state"]["thr"] == 0.25
    assert view["ablation"]["ablation"]["neurons"] == ids[:1]
    direct = client.post(f"/api/analyses/{analysis['id']}/ablations", json={"neurons": ids[:1]}).json()
    assert direct["result"] == view["ablation"]

    page = client.get(link.json()["url"])
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert helpers.PROMPT in page.text and 'id="analysis-data"' in page.text


def test_view_state_from_the_query_string(client, helpers):
    analysis = helpers.analyze(client)
    nid = analysis["result"]["nodes"][0]["id"]
    query = {"sel": f"{nid},L0.N0", "abl": nid, "mode": "scale", "factor": "2", "thr": "0.5"}
    view = client.get(f"/a/{analysis['slug']}.json", params=query).json()
    assert view["state"]["abl"] == {"neurons": [nid], "mode": "scale", "factor": 2.0}
    assert view["state"]["thr"] == 0.5 and "L0.N0" in view["state"]["sel"]
    assert view["ablation"]["ablation"]["mode"] == "scale"
    bare = client.get(f"/a/{analysis['slug']}.json").json()
    assert bare["ablation"] is None and bare["state"]["sel"] == [] and bare["analysis"] == analysis


def test_pages_and_json_twins(client, helpers):
    analysis = helpers.analyze(client)
    home = client.get("/")
    assert home.status_code == 200 and analysis["url"] in home.text and MODEL in home.text
    page = client.get(analysis["url"])
    assert page.status_code == 200 and "<html" in page.text

    neuron_page = client.get(f"/m/{MODEL}/n/L1.N3")
    assert neuron_page.status_code == 200 and "L1.N3" in neuron_page.text
    twin = client.get(f"/m/{MODEL}/n/L1.N3.json").json()
    assert twin == client.get(f"/api/models/{MODEL}/neurons/L1.N3").json()["neuron"]


def test_static_files_and_plotly(client):
    plotly = client.get("/static/vendor/plotly.min.js")
    assert plotly.status_code == 200 and len(plotly.content) > 1_000_000
    assert "javascript" in plotly.headers["content-type"]
    assert client.get("/static/js/api.js").status_code == 200
    assert client.get("/static/nope.js").status_code == 404


def test_openapi_and_docs_are_served(client):
    assert client.get("/openapi.json").json()["info"]["title"] == "CircuitScope"
    assert client.get("/docs").status_code == 200
