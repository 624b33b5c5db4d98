"""The product in a real browser: Debian's chromium driven by Playwright against the real app and model.

Covers the issue's browser checklist: submit a prompt from the form and land on the permalink; the graph
has n_layers x K nodes; clicking a node opens the neuron panel with decoded tokens; ablating the top
nodes lowers the shown target probability; a permalink reopened in a new browser context restores
selection, threshold and ablation; a prompt of HTML stays text and never runs. Screenshots of every
main view go to test-artifacts/ (git-ignored) so a person can look at them.
"""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.real_model]

PROMPT = "The capital of France is"
TARGET = " Paris"
K = 5
XSS = "<img src=x onerror=alert(1)>"
DEFAULT_MODEL = "SmolLM2-135M-Instruct"


# ------------------------------------------------------------------ helpers


def create_analysis(base_url: str, **body) -> dict:
    """POST /api/analyses and wait for the job; returns {"id", "url"} of the stored analysis."""
    with httpx.Client(base_url=base_url, timeout=300) as client:
        r = client.post("/api/analyses", json=body)
        assert r.status_code in (200, 202), r.text
        data = r.json()
        if r.status_code == 200:
            return {"id": data["analysis"]["id"], "url": data["analysis"]["url"]}
        job_id = data["job"]["id"]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = client.get(f"/api/jobs/{job_id}").json()
            if job["status"] == "done":
                return {"id": job["result_id"], "url": job["url"]}
            if job["status"] in ("failed", "cancelled"):
                pytest.fail(f"analysis job {job['status']}: {job.get('error')}")
            time.sleep(0.1)
    pytest.fail("analysis did not finish within 300 s")


@pytest.fixture(scope="module")
def france(base_url) -> dict:
    return create_analysis(base_url, prompt=PROMPT, target=TARGET, method="attribution", k=K)


def open_analysis(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#graph[data-ready='1']")
    page.wait_for_function("document.body.dataset.ready === '1'")


def result_of(page) -> dict:
    return page.evaluate("JSON.parse(document.getElementById('analysis-data').textContent).result")


def drawn_nodes(page) -> int:
    """Markers plotly actually drew in the node trace (the last trace of the plot)."""
    return page.locator("#graph .scatterlayer .trace").last.locator("path.point").count()


def click_node(page, node_id: str, shift: bool = False) -> None:
    """Click a node where plotly drew it (hover first: plotly picks points on mouse move)."""
    page.locator("#graph").scroll_into_view_if_needed()
    pos = page.evaluate("id => document.getElementById('graph').__nag.screenPos(id)", node_id)
    assert pos, f"{node_id} is not in the graph"
    page.mouse.move(pos["clientX"] + 1, pos["clientY"] + 1)
    page.mouse.move(pos["clientX"], pos["clientY"])
    page.wait_for_timeout(120)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(pos["clientX"], pos["clientY"])
    if shift:
        page.keyboard.up("Shift")


def graph_sets(page) -> dict:
    return page.evaluate("""() => { const g = document.getElementById('graph').__nag;
        return {selected: [...g.selected].sort(), ablated: [...g.ablated].sort(), thr: g.thr}; }""")


def assert_clean(probe) -> None:
    assert not probe.errors, f"JavaScript errors: {probe.errors}"
    assert not probe.dialogs, f"unexpected dialogs: {probe.dialogs}"


# ------------------------------------------------------------------ tests


def test_submit_prompt_from_the_form_reaches_the_permalink(new_page, artifacts):
    page, probe = new_page()
    page.goto("/")
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.fill("#prompt", PROMPT)
    page.fill("#target", TARGET)
    page.check("input[name=method][value=attribution]", force=True)
    page.fill("#k", str(K))
    page.screenshot(path=str(artifacts / "home.png"), full_page=True)
    page.click("#submit")
    # A fresh database: the first analysis is a job (202); its progress card shows until it is done.
    for _ in range(50):  # a fast machine may finish first; the permalink is what counts
        if page.locator("#job").is_visible():
            page.screenshot(path=str(artifacts / "home_progress.png"))
            break
        if "/a/" in page.url:
            break
        page.wait_for_timeout(100)
    page.wait_for_url("**/a/*", timeout=300_000)
    open_analysis(page, page.url)

    result = result_of(page)
    n_layers = result["model"]["n_layers"]
    assert result["prompt"] == PROMPT
    assert result["target"]["token"] == TARGET
    assert page.locator("#graph").get_attribute("data-node-count") == str(n_layers * K)
    assert drawn_nodes(page) == n_layers * K
    assert page.locator("#prompt-text").inner_text() == PROMPT
    assert page.locator("#tokens .tok").count() == len(result["tokens"])
    assert page.locator("#prediction .bar-item").count() == len(result["top"])
    page.screenshot(path=str(artifacts / "analysis.png"), full_page=True)
    assert_clean(probe)


def test_graph_has_n_layers_times_k_nodes_and_threshold_prunes(new_page, france, artifacts):
    page, probe = new_page()
    open_analysis(page, france["url"])
    result = result_of(page)
    total = result["model"]["n_layers"] * K
    assert int(page.locator("#graph").get_attribute("data-node-count")) == total
    assert drawn_nodes(page) == total

    page.locator("#thr").fill("0.5")
    page.wait_for_function(f"+document.getElementById('graph').dataset.visibleCount < {total}")
    visible = int(page.locator("#graph").get_attribute("data-visible-count"))
    max_abs = max(abs(n["impact"]) for n in result["nodes"])
    expected = sum(1 for n in result["nodes"] if abs(n["impact"]) >= 0.5 * max_abs - 1e-12)
    assert visible == expected
    assert drawn_nodes(page) == expected
    page.wait_for_function("location.search.includes('thr=0.5')")  # the URL holds the view
    page.locator("#thr").fill("0")
    page.wait_for_function(f"+document.getElementById('graph').dataset.visibleCount === {total}")
    assert_clean(probe)


def test_clicking_a_node_opens_the_panel_with_decoded_tokens(new_page, france, artifacts):
    page, probe = new_page()
    open_analysis(page, france["url"])
    result = result_of(page)
    node_id = page.evaluate("() => document.getElementById('graph').__nag.top(1, 'abs')[0]")

    click_node(page, node_id)
    page.wait_for_selector(f"#panel[data-neuron='{node_id}'] [data-testid=vocab-write] .vchip")
    assert page.locator("#panel [data-testid=panel-title]").inner_text() == node_id
    write_top = page.locator("#panel [data-testid=vocab-write] .vocab-chips.pos .vchip")
    assert write_top.count() >= 5
    assert page.locator("#panel [data-testid=vocab-read-up] .vchip").count() >= 5
    # The heat strip: one cell per prompt token.
    assert page.locator("#panel [data-testid=heat-strip] .heat-tok").count() == len(result["tokens"])
    # A click also selects the node, and the URL says so.
    assert graph_sets(page)["selected"] == [node_id]
    page.wait_for_function("id => location.search.includes('sel=' + id)", arg=node_id)

    # Shift-click adds a second node to the selection.
    other = page.evaluate("() => document.getElementById('graph').__nag.top(2, 'abs')[1]")
    click_node(page, other, shift=True)
    page.wait_for_function("document.getElementById('graph').__nag.selected.size === 2")
    page.wait_for_selector(f"#panel[data-neuron='{other}'] [data-testid=vocab-write] .vchip")
    page.screenshot(path=str(artifacts / "analysis_panel.png"), full_page=True)
    assert_clean(probe)


def test_box_select_and_select_layer(new_page, france):
    page, probe = new_page()
    open_analysis(page, france["url"])
    page.locator("#graph").scroll_into_view_if_needed()
    corner = page.evaluate("""() => { const g = document.getElementById('graph').__nag;
        const at = (l, r) => g.nodes.find(n => n.layer === l && n.rank === r).id;
        return {a: g.screenPos(at(0, 0)), b: g.screenPos(at(2, 1)),
                ids: g.nodes.filter(n => n.layer <= 2 && n.rank <= 1).map(n => n.id).sort()}; }""")
    x0, y0 = corner["a"]["clientX"] - 12, corner["a"]["clientY"] - 12
    x1, y1 = corner["b"]["clientX"] + 12, corner["b"]["clientY"] + 12
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move((x0 + x1) / 2, (y0 + y1) / 2, steps=6)
    page.mouse.move(x1, y1, steps=6)
    page.mouse.up()
    page.wait_for_function(f"document.getElementById('graph').__nag.selected.size === {len(corner['ids'])}")
    assert graph_sets(page)["selected"] == corner["ids"]
    assert page.locator("#sel-count").inner_text() == f"{len(corner['ids'])} selected"

    page.select_option("#layer-select", "3")
    page.click("#select-layer")
    layer3 = page.evaluate("() => document.getElementById('graph').__nag.layerIds(3).sort()")
    assert len(layer3) == K
    assert graph_sets(page)["selected"] == layer3
    page.click("#clear-sel")
    assert graph_sets(page)["selected"] == []
    assert_clean(probe)


def test_ablating_top_nodes_lowers_the_target_probability(new_page, france, artifacts):
    page, probe = new_page()
    open_analysis(page, france["url"])
    page.fill("#topn", "10")
    page.select_option("#topn-by", "pos")
    page.click("#select-top")
    assert page.locator("#sel-count").inner_text() == "10 selected"
    page.click("#ablate-btn")
    tile = page.wait_for_selector("#abl-target")
    baseline = float(tile.get_attribute("data-baseline-prob"))
    ablated = float(tile.get_attribute("data-ablated-prob"))
    assert ablated < baseline, (baseline, ablated)
    assert abs(baseline - result_of(page)["target"]["prob"]) < 1e-3
    # Shown to the user: before -> after, the change, KL, both continuations, marked nodes.
    assert page.locator("#abl-target .tile-after").inner_text().endswith("%")
    assert page.locator("[data-testid=abl-delta]").inner_text().startswith("−")
    assert page.locator("[data-testid=cont-baseline]").inner_text().strip()
    assert page.locator("[data-testid=cont-ablated]").inner_text().strip()
    assert len(graph_sets(page)["ablated"]) == 10
    page.wait_for_function("location.search.includes('abl=') && location.search.includes('mode=zero')")
    page.screenshot(path=str(artifacts / "analysis_ablated.png"), full_page=True)

    # Reset removes the ablation; Undo brings it back.
    page.click("#reset-btn")
    page.wait_for_selector("#abl-target", state="detached")
    assert graph_sets(page)["ablated"] == []
    page.wait_for_function("!location.search.includes('abl=')")
    page.click("#undo-btn")
    page.wait_for_selector("#abl-target")
    assert len(graph_sets(page)["ablated"]) == 10
    assert_clean(probe)


def test_permalink_restores_selection_threshold_and_ablation_in_a_new_context(new_page, france, artifacts):
    page, probe = new_page()
    open_analysis(page, france["url"])
    page.fill("#topn", "5")
    page.select_option("#topn-by", "pos")
    page.click("#select-top")
    page.check("input[name=abl-mode][value=scale]", force=True)
    page.fill("#factor", "0.25")
    page.click("#ablate-btn")
    page.wait_for_selector("#abl-target")
    page.locator("#thr").fill("0.1")
    before = graph_sets(page)
    before_prob = page.get_attribute("#abl-target", "data-ablated-prob")
    assert len(before["selected"]) == 5 and before["ablated"] == before["selected"]

    page.click("#share-btn")
    page.wait_for_selector("#share-row:not([hidden])")
    link = page.input_value("#share-url")
    assert "/a/" in link and "?v=" in link
    query_url = page.url

    for url, name in ((link, "permalink_restored.png"), (query_url, None)):
        fresh, fresh_probe = new_page()
        open_analysis(fresh, url)
        fresh.wait_for_selector("#abl-target")
        after = graph_sets(fresh)
        assert after["selected"] == before["selected"]
        assert after["ablated"] == before["ablated"]
        assert abs(after["thr"] - 0.1) < 1e-9
        assert fresh.input_value("#thr") == "0.1"
        assert fresh.locator("#sel-count").inner_text() == "5 selected"
        assert fresh.is_checked("input[name=abl-mode][value=scale]")
        assert fresh.input_value("#factor") == "0.25"
        assert fresh.get_attribute("#abl-target", "data-ablated-prob") == before_prob
        if name:
            assert "v=" in fresh.url  # the permalink stays as opened until the view changes
            fresh.screenshot(path=str(artifacts / name), full_page=True)
        assert_clean(fresh_probe)
    assert_clean(probe)


def test_a_running_analysis_can_be_cancelled(new_page, base_url, artifacts):
    page, probe = new_page()
    page.goto("/")
    page.wait_for_function("document.body.dataset.ready === '1'")
    # Integrated gradients over a long prompt: slow enough to cancel while it runs.
    page.fill("#prompt", "Cancel me: " + "a long and winding road that leads to your door " * 10)
    page.check("input[name=method][value=ig]", force=True)
    page.click("#submit")
    page.wait_for_selector("#job:not([hidden])")
    job_id = page.get_attribute("#job", "data-job-id")
    page.click("#job-cancel")
    page.wait_for_selector("#job", state="hidden", timeout=180_000)
    assert page.locator("#submit").is_enabled()
    assert page.evaluate("location.pathname") == "/"
    assert page.locator("#banner").is_hidden()
    with httpx.Client(base_url=base_url, timeout=30) as client:
        assert client.get(f"/api/jobs/{job_id}").json()["status"] in ("cancelled", "done")
    assert_clean(probe)


def test_html_in_a_prompt_is_shown_as_text_and_never_runs(new_page, artifacts):
    page, probe = new_page()
    page.goto("/")
    page.fill("#prompt", XSS)
    page.click("#submit")
    page.wait_for_url("**/a/*", timeout=300_000)
    open_analysis(page, page.url)
    page.wait_for_timeout(300)
    assert page.locator("#prompt-text").inner_text() == XSS
    assert page.locator("img").count() == 0
    assert "".join(page.locator("#tokens .tok").all_inner_texts()) == XSS
    # Open a neuron too: its heat strip shows the same tokens, as text.
    node_id = page.evaluate("() => document.getElementById('graph').__nag.top(1, 'abs')[0]")
    click_node(page, node_id)
    page.wait_for_selector("#panel [data-testid=heat-strip] .heat-tok")
    assert page.locator("img").count() == 0
    page.screenshot(path=str(artifacts / "xss_prompt.png"), full_page=True)

    page.goto("/")
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert XSS in page.locator(".recent-list").inner_text()
    assert page.locator("img").count() == 0
    assert probe.dialogs == [], f"the prompt ran as HTML: {probe.dialogs}"
    assert_clean(probe)


def test_api_errors_show_as_a_readable_banner(new_page, artifacts):
    page, probe = new_page()
    page.goto("/")
    page.fill("#prompt", PROMPT)
    page.fill("#target", " Paris is lovely")
    page.click("#submit")
    banner = page.wait_for_selector("#banner:not([hidden])")
    text = banner.inner_text()
    assert "token" in text.lower(), text
    assert page.locator("#submit").is_enabled()
    page.screenshot(path=str(artifacts / "home_error.png"))

    page.goto("/a/no-such-analysis")
    assert "no analysis" in page.locator("main").inner_text().lower()
    page.screenshot(path=str(artifacts / "error_404.png"))
    assert_clean(probe)


def test_a_long_prompt_and_a_30x20_graph_stay_responsive(new_page, base_url, artifacts):
    sentence = "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat. "
    prompt = (sentence * 12).strip()  # about 200 tokens
    analysis = create_analysis(base_url, prompt=prompt, method="attribution", k=20)
    page, probe = new_page()
    open_analysis(page, analysis["url"])
    result = result_of(page)
    total = result["model"]["n_layers"] * 20
    assert len(result["tokens"]) >= 150
    assert int(page.locator("#graph").get_attribute("data-node-count")) == total
    assert drawn_nodes(page) == total
    first_render = int(page.locator("#graph").get_attribute("data-render-ms"))
    timings = []
    for thr in ("0.05", "0.2", "0.4", "0"):
        page.locator("#thr").fill(thr)
        page.wait_for_timeout(60)
        page.wait_for_function(
            "t => Math.abs(document.getElementById('graph').__nag.thr - t) < 1e-9 && !document.getElementById('graph').__nag.pending",
            arg=float(thr))
        timings.append(int(page.locator("#graph").get_attribute("data-render-ms")))
    assert max([first_render, *timings]) < 1500, (first_render, timings)
    page.screenshot(path=str(artifacts / "analysis_30x20_long_prompt.png"), full_page=True)
    assert_clean(probe)


def test_neuron_page_shows_the_panel(new_page, artifacts):
    page, probe = new_page()
    page.goto(f"/m/{DEFAULT_MODEL}/n/L3.N5")
    page.wait_for_selector("#panel [data-testid=vocab-write] .vchip")
    assert page.locator("h1").inner_text() == "L3.N5"
    assert page.locator("#panel [data-testid=vocab-read-gate] .vchip").count() >= 5  # SwiGLU: gate row
    page.screenshot(path=str(artifacts / "neuron.png"), full_page=True)
    assert_clean(probe)
