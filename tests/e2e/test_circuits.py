"""NeurFlow circuits in a real browser: Debian's chromium driven by Playwright against the real app and model.

Covers the issue's browser view: build a circuit from the home page (following the job) and land on
/c/<slug>; the graph shows every group; clicking a group opens its panel with member neurons, concept
samples (focus token highlighted) and what it writes; ablating a group (and several, by shift-click)
shows the analysis page's before/after panel; a permalink reopened in a new browser context restores the
selected and ablated groups; HTML in a prompt stays text. Fast mode over a small window (layers 26-29,
tau 8, k 25) keeps each circuit to a few seconds. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import time

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.real_model]

PROMPT = "The capital of France is"
TARGET = " Paris"
XSS = "<img src=x onerror=alert(1)>"
CIRCUIT = {"tau": 8, "k": 25, "layers": "26-29", "fast": True}


# ------------------------------------------------------------------ helpers


def _follow(client: httpx.Client, job_id: str, what: str) -> dict:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] == "done":
            return {"id": job["result_id"], "url": job["url"]}
        if job["status"] in ("failed", "cancelled"):
            pytest.fail(f"{what} job {job['status']}: {job.get('error')}")
        time.sleep(0.1)
    pytest.fail(f"{what} did not finish within 300 s")


def create_circuit(base_url: str, **body) -> dict:
    """POST /api/circuits and wait for the job; returns {"id", "url"} of the stored circuit."""
    with httpx.Client(base_url=base_url, timeout=300) as client:
        r = client.post("/api/circuits", json=body)
        assert r.status_code in (200, 202), r.text
        data = r.json()
        if r.status_code == 200:
            return {"id": data["circuit"]["id"], "url": data["circuit"]["url"]}
        return _follow(client, data["job"]["id"], "circuit")


@pytest.fixture(scope="module")
def france(base_url) -> dict:
    """The circuit the home-page test builds too (same request: a cache hit for whichever comes second)."""
    return create_circuit(base_url, prompt=PROMPT, target=TARGET, **CIRCUIT)


def open_circuit(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector("#graph[data-ready='1']")
    page.wait_for_function("document.body.dataset.ready === '1'")


def result_of(page) -> dict:
    return page.evaluate("JSON.parse(document.getElementById('circuit-data').textContent).result")


def drawn_groups(page) -> int:
    """Markers plotly drew in the group trace."""
    return page.evaluate("""() => { const g = document.getElementById('graph').__circuit;
        const trace = [...document.querySelectorAll('#graph .scatterlayer .trace')]
          .find((t) => t.__data__ && t.__data__[0] && t.__data__[0].trace.index === g.nodeTraceIndex);
        return trace ? trace.querySelectorAll('path.point').length : 0; }""")


def click_group(page, group_id: str, shift: bool = False) -> None:
    """Click a group where plotly drew it (hover first: plotly picks points on mouse move)."""
    page.locator("#graph").scroll_into_view_if_needed()
    pos = page.evaluate("id => document.getElementById('graph').__circuit.screenPos(id)", group_id)
    assert pos, f"{group_id} is not in the graph"
    page.mouse.move(pos["clientX"] + 1, pos["clientY"] + 1)
    page.mouse.move(pos["clientX"], pos["clientY"])
    page.wait_for_timeout(120)
    if shift:
        page.keyboard.down("Shift")
    page.mouse.click(pos["clientX"], pos["clientY"])
    if shift:
        page.keyboard.up("Shift")


def graph_sets(page) -> dict:
    return page.evaluate("""() => { const g = document.getElementById('graph').__circuit;
        return {selected: [...g.selected].sort(), ablated: [...g.ablated].sort()}; }""")


def top_groups(page, n: int) -> list[str]:
    return page.evaluate("n => document.getElementById('graph').__circuit.top(n)", n)


def token_text(tok: str) -> str:
    """What dom.js tokenText shows for a token (whitespace made visible)."""
    if tok == "":
        return "∅"
    if tok.strip(" \u00a0") == "":
        return "␣" * len(tok)
    return tok.replace("\r", "␍").replace("\n", "↵").replace("\t", "⇥")


def screenshot(page, path) -> None:
    """A full-page screenshot from the top (the sticky header stays where it belongs)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(100)
    page.screenshot(path=str(path), full_page=True)


def assert_clean(probe) -> None:
    assert not probe.errors, f"JavaScript errors: {probe.errors}"
    assert not probe.dialogs, f"unexpected dialogs: {probe.dialogs}"


# ------------------------------------------------------------------ tests


def test_build_a_circuit_from_the_home_page(new_page, artifacts):
    page, probe = new_page()
    page.goto("/")
    page.wait_for_function("document.body.dataset.ready === '1'")
    assert page.locator("#circuit-options").is_hidden()
    page.check("input[name=kind][value=circuit]", force=True)
    assert page.locator("#circuit-options").is_visible()
    assert page.locator("#submit .btn-label").inner_text() == "Build circuit"
    page.fill("#prompt", PROMPT)
    page.fill("#target", TARGET)
    page.fill("#tau", str(CIRCUIT["tau"]))
    page.fill("#ck", str(CIRCUIT["k"]))
    page.fill("#layers", CIRCUIT["layers"])
    page.check("#fast")
    screenshot(page, artifacts / "circuit_home.png")
    page.click("#submit")
    for _ in range(100):  # the job card shows while the circuit is computed (a cache hit skips it)
        if page.locator("#job").is_visible():
            assert page.locator("#job-kind").inner_text().lower() == "circuit running"
            page.screenshot(path=str(artifacts / "circuit_progress.png"))
            break
        if "/c/" in page.url:
            break
        page.wait_for_timeout(50)
    page.wait_for_url("**/c/*", timeout=300_000)
    open_circuit(page, page.url)

    result = result_of(page)
    assert result["kind"] == "circuit"
    assert result["prompts"][0]["prompt"] == PROMPT
    assert result["target"]["token"] == TARGET
    assert result["params"]["layers"] == [26, 29] and result["params"]["fast"] is True
    n_groups = len(result["groups"])
    assert n_groups >= 4
    assert page.locator("#graph").get_attribute("data-group-count") == str(n_groups)
    assert drawn_groups(page) == n_groups
    # Every layer of the window has its column of groups, and the fidelity report is drawn.
    layers = page.evaluate("() => [...document.getElementById('graph').__circuit.byLayer.keys()].sort()")
    assert layers == [26, 27, 28, 29]
    assert page.locator("#prompt-text").inner_text() == PROMPT
    assert page.locator("#fidelity-table tbody tr").count() == len(result["fidelity"]["ablation"])
    assert page.locator("[data-testid=fidelity-all]").inner_text().endswith("pts")
    screenshot(page, artifacts / "circuit.png")
    assert_clean(probe)


def test_clicking_a_group_opens_its_members_and_samples(new_page, france, artifacts):
    page, probe = new_page()
    open_circuit(page, france["url"])
    result = result_of(page)
    gid = top_groups(page, 1)[0]
    group = next(g for g in result["groups"] if g["id"] == gid)

    click_group(page, gid)
    page.wait_for_selector(f"#panel[data-group='{gid}'] [data-testid=group-members] .member-chip")
    assert page.locator("#panel [data-testid=panel-title]").inner_text() == gid
    chips = page.locator("#panel [data-testid=group-members] .member-chip")
    assert chips.count() == len(set(group["neurons"]))
    href = chips.first.get_attribute("href")
    assert href.startswith(f"/m/{result['model']['name']}/n/L{group['layer']}.N")
    # Samples: the tokens around the sample, exactly one of them highlighted (the focus token).
    samples = page.locator("#panel [data-testid=group-samples] .sample")
    assert samples.count() == len(group["samples"]) > 0
    for i, sample in enumerate(group["samples"]):
        item = samples.nth(i)
        assert item.locator(".stok").count() == len(sample["tokens"])
        assert item.locator(".stok-focus").count() == 1
        assert item.locator(".stok-focus").inner_text() == token_text(sample["tokens"][sample["focus"]])
    assert page.locator("#panel [data-testid=group-writes] .vocab-chips.pos .vchip").count() == len(group["writes"]["top"])
    assert page.locator("#panel [data-testid=group-stability]").inner_text().strip()
    # The click selects the group, and the URL says so.
    assert graph_sets(page)["selected"] == [gid]
    page.wait_for_function("id => new URLSearchParams(location.search).get('grp') === id", arg=gid)
    screenshot(page, artifacts / "circuit_panel.png")

    # A member chip opens the neuron page.
    neuron = chips.first.get_attribute("data-neuron")
    chips.first.click()
    page.wait_for_selector("#panel [data-testid=vocab-write] .vchip")
    assert page.locator("h1").inner_text() == neuron
    assert_clean(probe)


def test_ablating_groups_shows_the_before_after_panel(new_page, base_url, france, artifacts):
    page, probe = new_page()
    open_circuit(page, france["url"])
    result = result_of(page)
    first, second = top_groups(page, 2)

    click_group(page, first)
    page.wait_for_selector(f"#panel[data-group='{first}']")
    page.click("#panel [data-testid=ablate-group]")
    tile = page.wait_for_selector("#abl-target")
    baseline = float(tile.get_attribute("data-baseline-prob"))
    ablated = float(tile.get_attribute("data-ablated-prob"))
    kl = float(page.get_attribute("[data-testid=abl-kl]", "data-kl"))
    assert abs(baseline - result["prompts"][0]["target"]["prob"]) < 1e-3
    assert kl > 0 and ablated != baseline, (baseline, ablated, kl)
    # The same before/after panel as the analysis page: both top-10 lists, the change, both continuations.
    assert page.locator("#abl-body .compare .bar-col").count() == 2
    assert page.locator("[data-testid=abl-delta]").inner_text().endswith("pts")
    assert page.locator("[data-testid=cont-baseline]").inner_text().strip()
    assert page.locator("[data-testid=cont-ablated]").inner_text().strip()
    assert graph_sets(page)["ablated"] == [first]
    assert page.locator("#target-prob-ablated").is_visible()
    page.wait_for_function("id => new URLSearchParams(location.search).get('gabl') === id", arg=first)
    # The number shown is what the API answers for that group.
    with httpx.Client(base_url=base_url, timeout=120) as client:
        api = client.post(f"/api/circuits/{france['id']}/ablations", json={"groups": [first], "mode": "zero"}).json()
    assert abs(api["result"]["ablated"]["target_prob"] - ablated) < 1e-9
    screenshot(page, artifacts / "circuit_ablated.png")

    # Shift-click adds a second group; Ablate switches both off together.
    click_group(page, second, shift=True)
    page.wait_for_function("document.getElementById('graph').__circuit.selected.size === 2")
    assert page.locator("#sel-count").inner_text() == "2 selected"
    assert page.locator("#ablate-btn").inner_text() == "Ablate 2 groups"
    page.click("#ablate-btn")
    page.wait_for_function("document.getElementById('graph').__circuit.ablated.size === 2")
    assert graph_sets(page)["ablated"] == sorted([first, second])
    assert page.locator("#abl-desc").inner_text() == "Zero-ablating 2 groups"

    # Reset removes the ablation; Undo brings it back.
    page.click("#reset-btn")
    page.wait_for_selector("#abl-target", state="detached")
    assert graph_sets(page)["ablated"] == []
    page.click("#undo-btn")
    page.wait_for_selector("#abl-target")
    assert graph_sets(page)["ablated"] == sorted([first, second])
    assert_clean(probe)


def test_permalink_restores_selected_and_ablated_groups_in_a_new_context(new_page, france, artifacts):
    page, probe = new_page()
    open_circuit(page, france["url"])
    first, second = top_groups(page, 2)
    click_group(page, first)
    click_group(page, second, shift=True)
    page.wait_for_function("document.getElementById('graph').__circuit.selected.size === 2")
    page.check("input[name=abl-mode][value=mean]", force=True)
    page.click("#ablate-btn")
    page.wait_for_function("document.getElementById('graph').__circuit.ablated.size === 2")
    before_prob = page.get_attribute("#abl-target", "data-ablated-prob")
    page.wait_for_function("new URLSearchParams(location.search).get('mode') === 'mean'")

    page.click("#share-btn")
    page.wait_for_selector("#share-row:not([hidden])")
    link = page.input_value("#share-url")
    assert "/c/" in link and "?v=" in link
    query_url = page.url
    assert "gabl=" in query_url and "grp=" in query_url

    for url, name in ((link, "circuit_permalink_restored.png"), (query_url, None)):
        fresh, fresh_probe = new_page()
        open_circuit(fresh, url)
        fresh.wait_for_selector("#abl-target")
        after = graph_sets(fresh)
        assert after["ablated"] == sorted([first, second])
        assert second in after["selected"]
        fresh.wait_for_selector(f"#panel[data-group='{second}'] .member-chip")
        assert fresh.is_checked("input[name=abl-mode][value=mean]")
        assert fresh.get_attribute("#abl-target", "data-ablated-prob") == before_prob
        assert fresh.locator("#abl-desc").inner_text() == "Mean-ablating 2 groups"
        if name:
            assert "v=" in fresh.url  # the permalink stays as opened until the view changes
            screenshot(fresh, artifacts / name)
        assert_clean(fresh_probe)
    assert_clean(probe)


def test_analysis_page_links_to_a_prefilled_circuit_form(new_page, base_url):
    with httpx.Client(base_url=base_url, timeout=300) as client:
        r = client.post("/api/analyses", json={"prompt": PROMPT, "target": TARGET, "method": "attribution", "k": 5})
        assert r.status_code in (200, 202), r.text
        data = r.json()
        url = data["analysis"]["url"] if r.status_code == 200 else _follow(client, data["job"]["id"], "analysis")["url"]
    page, probe = new_page()
    page.goto(url)
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.click("#build-circuit")
    page.wait_for_function("document.body.dataset.ready === '1' && location.pathname === '/'")
    assert page.is_checked("input[name=kind][value=circuit]")
    assert page.locator("#circuit-options").is_visible()
    assert page.input_value("#prompt") == PROMPT
    assert page.input_value("#target") == TARGET
    assert page.locator("#submit .btn-label").inner_text() == "Build circuit"
    assert_clean(probe)


def test_corpus_file_is_read_in_the_browser(new_page, tmp_path):
    good = tmp_path / "corpus.jsonl"
    good.write_text('{"text": "Berlin is the capital of Germany."}\n"Rome is in Italy."\n\n{"text": "Tokyo is big."}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\nnot json\n')
    page, probe = new_page()
    page.goto("/?kind=circuit")
    page.wait_for_function("document.body.dataset.ready === '1'")
    page.set_input_files("#corpus-file", str(good))
    page.wait_for_function("document.getElementById('corpus-file').dataset.texts === '3'")
    assert "3 texts" in page.inner_text("#corpus-info")
    page.set_input_files("#corpus-file", str(bad))
    banner = page.wait_for_selector("#banner:not([hidden])")
    assert "line 2" in banner.inner_text()
    assert page.get_attribute("#corpus-file", "data-texts") == ""
    assert_clean(probe)


def test_html_in_a_circuit_prompt_is_shown_as_text(new_page, base_url, artifacts):
    circuit = create_circuit(base_url, prompt=XSS, **CIRCUIT)
    page, probe = new_page()
    open_circuit(page, circuit["url"])
    page.wait_for_timeout(300)
    assert page.locator("#prompt-text").inner_text() == XSS
    assert "".join(page.locator("#tokens .tok").all_inner_texts()) == XSS
    # Open every group whose samples include the prompt itself: its tokens are shown as text too.
    result = result_of(page)
    with_prompt = [g["id"] for g in result["groups"] if any(s["source"] == "prompt" for s in g["samples"])]
    for gid in (with_prompt or top_groups(page, 1))[:2]:
        click_group(page, gid)
        page.wait_for_selector(f"#panel[data-group='{gid}'] .sample")
    assert page.locator("img").count() == 0
    assert probe.dialogs == [], f"the prompt ran as HTML: {probe.dialogs}"
    screenshot(page, artifacts / "circuit_xss_prompt.png")
    assert_clean(probe)
