"""Every page of `mmat view` over HTTP (Starlette's TestClient): content, filters, escaping, safety."""

import re
import subprocess
import sys
import textwrap
from html import unescape

import pytest

from tests.view.storefix import CANARY, EVAL_A, EVAL_B, RUN, XSS

PAGES = ["/", f"/runs/{RUN}", "/browse", "/task/task-img", "/task/task-xss", "/trajectory/traj-img", "/trajectory/traj-doc",
         "/trajectory/traj-xss", "/pairs", "/eval", f"/eval/run/{EVAL_A}", f"/eval/diff?a={EVAL_A}&b={EVAL_B}"]


@pytest.fixture
def client(view_settings, client_for):
    return client_for(view_settings)


def rows_of(html: str) -> list[str]:
    """Trajectory ids linked from the browse table (in order)."""
    return re.findall(r'<a href="/trajectory/([^"]+)">', html.split('id="rows"')[1])


def cells_of(table_html: str) -> list[list[str]]:
    """The text of each body row's cells."""
    body = table_html.split("<tbody>")[1]
    return [[" ".join(unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)]


def task_ids_of(html: str) -> list[str]:
    return re.findall(r'<a href="/task/([^"]+)">', html.split('id="rows"')[1])


@pytest.mark.parametrize("url", PAGES)
def test_every_page_serves_html_with_a_strict_policy(client, url):
    r = client.get(url)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in r.headers["content-security-policy"] and "unsafe-inline" not in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("url", PAGES)
def test_untrusted_text_is_escaped_on_every_page(client, url):
    html = client.get(url).text
    assert "<script>window.__pwned" not in html and "<img src=x" not in html
    assert "<b>bold</b>" not in html and "<b>800</b>" not in html


def test_injected_script_renders_as_text(client):
    html = client.get("/trajectory/traj-xss").text
    assert html.count("&lt;script&gt;window.__pwned = 1&lt;/script&gt;") >= 4  # query, thought, observation, verdict reason...
    assert XSS in unescape(html)


def test_runs_page_lists_every_kind_with_counts_and_cost(client):
    html = client.get("/").text
    runs = html.split('id="runs"')[1].split("</table>")[0]
    for run in (RUN, "run-synth-b", "run-prefs"):
        assert f'href="/runs/{run}"' in runs
    row = next(r for r in cells_of(runs) if r[0] == RUN[:12])
    # run, kind, status, started, duration, tasks, trajectories, kept, pairs, LM calls, cost
    assert row[1:3] == ["synth", "done"] and row[4:11] == ["90s", "5", "3", "2", "0", "7", "0.2800"]
    prefs = next(r for r in cells_of(runs) if r[0] == "run-prefs")
    assert prefs[1] == "prefs" and prefs[8] == "1"
    assert f'href="/eval/run/{EVAL_A}"' in html and f'href="/eval/run/{EVAL_B}"' in html


def test_report_page_shows_the_report_figures_and_its_charts(client):
    html = client.get(f"/runs/{RUN}").text
    stages = html.split('id="stages"')[1].split("</table>")[0]
    assert "task specs written</td><td class=\"num\">5" in stages and "kept (verdict correct)</td><td class=\"num\">2" in stages
    rules = html.split('id="rule-rejections"')[1].split("</section>")[0]
    assert "final_answer_called" in rules and "final_answer was never called" in rules
    assert "answer is # characters of junk" in html.split('id="lm-rejections"')[1].split("</section>")[0]
    assert "ocr + visualizer" in html and "CodeAgent" in html
    charts = re.findall(r'src="(/plot/[0-9a-f]+\.svg)"', html)
    assert len(charts) == 4
    for chart in charts:
        r = client.get(chart)
        assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml") and b"<svg" in r.content
    assert client.get("/plot/" + "0" * 32 + ".svg").status_code == 404


def test_report_of_an_unknown_run_is_a_message_not_a_500(client):
    r = client.get("/runs/no-such-run")
    assert r.status_code == 400 and "no run &#39;no-such-run&#39;" in r.text


def test_browse_lists_tasks_with_and_without_trajectories(client):
    html = client.get("/browse").text
    assert re.search(r'id="total">(\d+)', html).group(1) == "6"  # 6 tasks, 4 of them with a trajectory
    assert set(rows_of(html)) == {"traj-img", "traj-doc", "traj-xss", "traj-b"}
    assert {"task-files", "task-dup"} <= set(task_ids_of(html))


@pytest.mark.parametrize("query, expected", [
    ("run=run-synth-b", {"traj-b"}),
    ("status=fallback", {"traj-xss"}),
    ("status=solved", {"traj-img", "traj-doc", "traj-b"}),
    ("domain=finance", {"traj-doc", "traj-xss"}),
    ("tool=visualizer", {"traj-img"}),
    ("tool=inspect_file_as_text", {"traj-doc"}),
    ("verdict=incorrect", {"traj-xss"}),
    ("origin=synth", {"traj-img", "traj-doc", "traj-xss", "traj-b"}),
    ("where=t.n_steps+%3E%3D+2", {"traj-img", "traj-doc"}),
    ("where=k.query+ILIKE+%27%25revenue%25%27", {"traj-doc"}),
    ("domain=finance&verdict=correct", {"traj-doc"}),
])
def test_each_filter_narrows_the_list(client, query, expected):
    html = client.get(f"/browse?{query}").text
    assert 'id="filter-error"' not in html
    assert set(rows_of(html)) == expected


@pytest.mark.parametrize("where, message", [
    ("nope((", "does not parse"),
    ("no_such_column = 1", "no_such_column"),
    ("1=1; DROP TABLE tasks", "does not parse"),
    ("1=1); DROP TABLE tasks; SELECT (1", "one SQL expression"),
    ("k.query = (SELECT content FROM read_text('/etc/hostname'))", "disabled by configuration"),
])
def test_a_bad_sql_filter_is_shown_inline_never_a_500(client, where, message):
    r = client.get("/browse", params={"where": where})
    assert r.status_code == 200
    error = unescape(re.search(r'id="filter-error">(.*?)</p>', r.text, re.S).group(1))
    assert message in error
    assert client.get("/browse").text.count('class="row"') == 6  # nothing was dropped


def test_the_filter_cannot_read_files_outside_the_store(client, view_store):
    home, _ = view_store
    r = client.get("/browse", params={"where": f"k.query = (SELECT content FROM read_text('{home.parent / 'secret.txt'}'))"})
    assert CANARY not in r.text and 'id="filter-error"' in r.text


def test_pagination(fresh_store, client_for):
    from mmat.store import Store

    settings, _ = fresh_store
    with Store.open(settings.db_path) as store:
        store.writer.put("tasks", [{"task_id": f"bulk-{i:03d}", "run_id": "bulk", "query": f"bulk {i}", "status": "rejected"}
                                   for i in range(120)])
    client = client_for(settings)
    first = client.get("/browse?run=bulk").text
    assert "page 1 of 3" in first and first.count('class="row"') == 50 and 'id="next-page"' in first
    last = client.get("/browse?run=bulk&page=3").text
    assert last.count('class="row"') == 20 and 'id="next-page"' not in last
    seen = set()
    for page in (1, 2, 3):
        seen |= set(task_ids_of(client.get(f"/browse?run=bulk&page={page}").text))
    assert len(seen) == 120
    assert "page 1 of 3" in client.get("/browse?run=bulk&page=zero").text


def test_trajectory_page_shows_files_steps_tool_calls_and_verdicts(client, view_store):
    _, ids = view_store
    html = client.get("/trajectory/traj-img").text
    assert f'class="task-image" src="/blob/{ids["cat"]}"' in html
    assert f'class="step-image" src="/blob/{ids["chart"]}"' in html
    assert 'class="hl"' in html and "STEP0-OBSERVATION" in html  # highlighted code, observation
    assert "<code>visualizer</code>" in html and "&#34;x&#34;: 1" in html  # tool call with its arguments
    assert "answer matches the OCR" in html  # the LM verdict's reason


def test_documents_show_as_markdown_and_tables_as_tables(client):
    html = client.get("/trajectory/traj-doc").text
    verdicts = cells_of(html.split('Verdicts on this trajectory')[1].split("</table>")[0])
    assert [(r[0], r[3]) for r in verdicts if r[0].startswith("rules")] == [("rules", "yes"), ("rules (superseded)", "no")]
    assert "<h1>Quarterly note</h1>" in html and "Revenue grew by 12 percent in Q3." in html
    table = html.split("rents.csv")[1]
    assert "<th>city</th><th>rent</th>" in table and "<td>Paris</td><td>1200</td>" in table
    assert "<td>Lyon</td><td>&lt;b&gt;800&lt;/b&gt;</td>" in table
    assert "ZeroDivisionError" in html and "step-error" in html


def test_training_conversation_is_the_finetuning_builders(client, view_settings):
    from mmat.pipeline.training_data import load_conversations
    from mmat.store import Store

    html = client.get("/trajectory/traj-img").text
    conversation = html.split('id="conversation"')[1].split("</section>")[0]
    with Store.open(view_settings.db_path, read_only=True) as store:
        expected, _ = load_conversations(store, "t.traj_id = 'traj-img'", model="dummy/agent")
    messages = expected[0].messages
    assert conversation.count('class="message role-') == len(messages)
    last = messages[-1]["content"]
    assert unescape(conversation.split('role-assistant')[-1]).count(last.strip().splitlines()[0]) == 1
    assert "/blob/" in conversation  # the task image, as the student sees it


def test_eval_trajectory_without_a_task_still_renders(fresh_store, client_for):
    from mmat.store import Store

    settings, _ = fresh_store
    with Store.open(settings.db_path) as store:
        store.writer.put("trajectories", [{"traj_id": "traj-eval", "task_id": f"eval:{EVAL_A}:1", "run_id": EVAL_A,
                                           "controller": "x", "status": "answered", "origin": "eval", "n_steps": 0}])
        store.writer.put("eval_items", [{"eval_run_id": EVAL_A, "item_key": "9", "sample_idx": 0, "question": "eval q?", "traj_id": "traj-eval"}])
    client = client_for(settings)
    html = client.get("/trajectory/traj-eval").text
    assert "eval q?" in html and "not a stored task" in html
    assert "traj-eval" in rows_of(client.get("/browse?origin=eval").text)


def test_unknown_ids_are_404_pages(client):
    for url in ("/trajectory/nope", "/task/nope", "/eval/run/nope"):
        r = client.get(url)
        assert r.status_code == 404 and "no " in r.text


def test_pairs_side_by_side_with_context_and_reasons(client):
    html = client.get("/pairs").text
    chosen, rejected = html.split('class="side chosen"')[1], html.split('class="side rejected"')[1]
    assert "Plot and answer." in chosen.split('class="side rejected"')[0] and "0.90" in chosen
    assert "Guess &lt;script&gt;" in rejected and "0.20" in rejected
    assert "shared context: 1 earlier step(s)" in html and "Read the text first." in html
    assert "the chosen step uses the OCR result" in html
    assert 'id="total">1 pair' in client.get("/pairs?run=run-prefs").text
    assert 'id="total">0 pair' in client.get("/pairs?run=run-synth-a").text


def test_eval_run_items_and_diff(client):
    html = client.get(f"/eval/run/{EVAL_A}").text
    items = html.split('id="items"')[1]
    assert items.count("<tr>") == 3 and "AnsAcc mat" in items and 'href="/trajectory/traj-img"' in items
    diff = client.get(f"/eval/diff?a={EVAL_A}&b={EVAL_B}").text
    deltas = {r[0]: r[1:] for r in cells_of(diff.split('id="deltas"')[1].split("</table>")[0])}
    assert deltas["greedy.ans_acc.mat"] == ["0.500", "1.000", "0.500"]
    assert 'class="num up"' in diff
    per_item = diff.split('id="item-diff"')[1]
    assert per_item.count('class="changed"') == 1  # item 1: no -> yes
    bad = client.get("/eval/diff?a=nope&b=eval-base")
    assert bad.status_code == 200 and "no eval run &#39;nope&#39;" in bad.text


def test_blobs_are_served_only_by_content_id(client, view_store):
    home, ids = view_store
    image = client.get(f"/blob/{ids['cat']}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/png" and image.content[:4] == b"\x89PNG"
    doc = client.get(f"/blob/{ids['doc']}")
    assert doc.headers["content-type"] == "application/octet-stream" and "attachment" in doc.headers["content-disposition"]
    for bad in ("../secret.txt", "..%2Fsecret.txt", ids["cat"][:10], ids["cat"].upper(), "0" * 64, f"{ids['cat']}.png"):
        r = client.get(f"/blob/{bad}")
        assert r.status_code == 404 and CANARY not in r.text


def test_a_host_that_is_not_loopback_is_refused(view_settings, client_for):
    from starlette.testclient import TestClient

    from mmat.view import create_app

    r = TestClient(create_app(view_settings), base_url="http://evil.example").get("/")
    assert r.status_code == 400


def test_label_writes_the_same_rows_as_mmat_label(fresh_store, client_for, tmp_path):
    from mmat.optimizers import import_labels
    from mmat.store import Store

    settings, _ = fresh_store
    client = client_for(settings)
    html = client.get("/trajectory/traj-xss").text
    token = re.search(r'name="csrf" value="([^"]+)"', html).group(1)
    r = client.post("/label", data={"csrf": token, "subject_kind": "trajectory", "subject_id": "traj-xss",
                                    "label": "incorrect", "note": "fallback <b>junk</b>"}, headers={"Accept": "application/json"})
    assert r.status_code == 200 and r.json()["ok"]
    query = "SELECT * EXCLUDE (created_at) FROM verdicts WHERE verifier = 'label' ORDER BY subject_id"
    with Store.open(settings.db_path) as store:
        from_view = store.sql(query)
        store.sql("DELETE FROM verdicts WHERE verifier = 'label'")
        sheet = tmp_path / "labels.csv"
        sheet.write_text("subject_kind,subject_id,label,note\ntrajectory,traj-xss,incorrect,fallback <b>junk</b>\n")
        import_labels(store, sheet)
        from_cli = store.sql(query)
    assert from_view == from_cli and from_view[0]["passed"] is False
    assert "Current label: <b id=\"current-label\">incorrect</b>" in client.get("/trajectory/traj-xss").text


def test_label_without_the_token_or_with_a_bad_value_writes_nothing(fresh_store, client_for):
    from mmat.store import Store

    settings, _ = fresh_store
    client = client_for(settings)
    forged = client.post("/label", data={"csrf": "guess", "subject_kind": "task", "subject_id": "task-img", "label": "correct"})
    assert forged.status_code == 403
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/task/task-img").text).group(1)
    for data in ({"subject_kind": "task", "subject_id": "task-img", "label": "maybe"},
                 {"subject_kind": "run", "subject_id": "task-img", "label": "correct"},
                 {"subject_kind": "task", "subject_id": "no-such-task", "label": "correct"}):
        r = client.post("/label", data={"csrf": token, **data}, headers={"Accept": "application/json"})
        assert r.status_code == 400 and not r.json()["ok"]
    assert "no task no-such-task" in r.json()["message"]
    with Store.open(settings.db_path, read_only=True) as store:
        assert store.sql("SELECT count(*) AS n FROM verdicts WHERE verifier = 'label'")[0]["n"] == 0


def test_label_form_without_javascript_redirects_back(fresh_store, client_for):
    settings, _ = fresh_store
    client = client_for(settings)
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/task/task-img").text).group(1)
    r = client.post("/label", data={"csrf": token, "subject_kind": "task", "subject_id": "task-img", "label": "correct",
                                    "next": "/task/task-img"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/task/task-img"
    r = client.post("/label", data={"csrf": token, "subject_kind": "task", "subject_id": "task-img", "label": "correct",
                                    "next": "//evil.example/"}, follow_redirects=False)
    assert r.headers["location"] == "/"


HOLD = textwrap.dedent("""
    import sys, time
    from mmat.store import Store
    store = Store.open(sys.argv[1])
    store.writer.put("tasks", [{"task_id": "written-while-viewing", "run_id": "live", "query": "fresh row", "status": "generated"}])
    store.writer.flush()
    print("holding", flush=True)
    sys.stdin.readline()
    store.close()
""")


def test_pages_filters_and_labels_while_another_process_writes_the_store(fresh_store, client_for):
    settings, _ = fresh_store
    writer = subprocess.Popen([sys.executable, "-c", HOLD, str(settings.db_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "holding"
        client = client_for(settings)
        html = client.get("/browse?run=live").text
        assert "answered by the process writing the store" in html and "fresh row" in html  # its committed rows
        for url in PAGES:
            assert client.get(url).status_code == 200, url
        leak = client.get("/browse", params={"where": f"k.query = (SELECT content FROM read_text('{settings.home.parent / 'secret.txt'}'))"})
        assert 'id="filter-error"' in leak.text and "disabled by configuration" in leak.text and CANARY not in leak.text
        token = re.search(r'name="csrf" value="([^"]+)"', client.get("/task/task-img").text).group(1)
        r = client.post("/label", data={"csrf": token, "subject_kind": "task", "subject_id": "task-img", "label": "correct"},
                        headers={"Accept": "application/json"})
        assert not r.json()["ok"] and "mmat label import" in r.json()["message"]
        pending = settings.home / "labels" / "pending.jsonl"
        assert '"subject_id": "task-img"' in pending.read_text()
    finally:
        writer.communicate("\n", timeout=60)
    assert writer.returncode == 0  # the viewer never kept the writer from its file
    assert "live store" in client_for(settings).get("/").text


def test_the_viewer_does_not_hold_the_store_between_requests(fresh_store, client_for):
    from mmat.store import Store

    settings, _ = fresh_store
    client = client_for(settings)
    assert client.get("/browse").status_code == 200
    Store.open(settings.db_path).close()  # a writer can open the file right after a page was served


def test_no_store_is_a_clear_page(tmp_path, client_for):
    from mmat.config import load_settings

    r = client_for(load_settings(home=tmp_path / "empty")).get("/")
    assert r.status_code == 503 and "mmat demo" in r.text
