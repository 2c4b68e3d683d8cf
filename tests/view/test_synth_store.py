"""`mmat view` and `mmat report` over a store that a real `mmat synth` run (scripted models) wrote."""

import re

from click.testing import CliRunner

from mmat.config import load_settings
from mmat.pipeline.synth import SynthRequest, run_synth
from mmat.testing import scripted
from mmat.testing.scripted import VERIFIED_PER_SEED


def test_every_page_and_the_report_on_a_synthesized_store(mmat_home, client_for, tmp_path):
    scripted.register()
    settings = load_settings(home=mmat_home, teacher="dummy/teacher", verifier="dummy/verifier", controller="dummy/agent",
                             dedup_threshold=0.99, concurrency=1, step_timeout_s=20)
    summary = run_synth(settings, SynthRequest(tasks=1, tools=["inspect_file_as_text", "visualizer"], trajectories_per_task=1),
                        progress=False)
    client = client_for(settings)
    runs = client.get("/").text
    assert f'href="/runs/{summary.run_id}"' in runs
    report = client.get(f"/runs/{summary.run_id}")
    assert report.status_code == 200 and "tasks solved" in report.text
    browse = client.get("/browse").text
    trajs = re.findall(r'href="/trajectory/([^"]+)"', browse)
    assert len(trajs) == VERIFIED_PER_SEED
    for traj_id in trajs:
        page = client.get(f"/trajectory/{traj_id}")
        assert page.status_code == 200
        assert "march.csv" in page.text and 'class="message role-assistant"' in page.text  # file and training conversation
    tasks = set(re.findall(r'href="/task/([^"]+)"', browse))
    assert all(client.get(f"/task/{t}").status_code == 200 for t in tasks)
    assert "photo.png" in "".join(client.get(f"/trajectory/{t}").text for t in trajs)
    out = tmp_path / "report"
    result = CliRunner().invoke(__import__("mmat.cli", fromlist=["cli"]).cli, ["report", "--out", str(out)],
                                env={"MMAT_HOME": str(mmat_home)})
    assert result.exit_code == 0, result.output
    assert f"run {summary.run_id} (synth, done" in result.output and (out / "index.html").is_file()
