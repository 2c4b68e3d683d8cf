"""Train/val sets from the store: default selections, SQL selections, splits and the errors that name the fix."""

import pytest

from mmat.errors import ConfigError
from mmat.optimizers.datasets import DATASETS, build_sets, load_examples
from mmat.programs import GeneratedFile, Trajectory
from mmat.store import open_store
from mmat.signatures.queries import QuerySpec

from .conftest import DOMAIN, World


@pytest.fixture
def filled(settings):
    """Three solved tasks (one with two trajectories, one labelled), a rejected vague task, labels."""
    with open_store(settings) as store:
        w = World(store)
        ids = {f"k{i}": w.task(f"k{i}", rent=900 + i) for i in range(3)}
        ids["vague"] = w.task("vague", vague=True, status="rejected", expected=None)
        ids["t_right"] = w.trajectory(ids["k0"], "900")
        ids["t_wrong"] = w.trajectory(ids["k0"], "no idea", attempt=1)
        w.label("trajectory", ids["t_wrong"], "incorrect", "it never read the file")
        w.label("task", ids["vague"], "reject")
        w.label("task", ids["k1"], "pass")
    return ids


def examples(settings, program, sql=None):
    with open_store(settings, read_only=True) as store:
        return load_examples(store, program, sql, settings=settings)


def test_agent_trains_on_solved_tasks_with_their_files_and_answers(settings, filled):
    found, skipped = examples(settings, "agent")
    assert skipped == 0 and sorted(e.subject_id for e in found) == sorted(filled[k] for k in ("k0", "k1", "k2"))
    one = next(e for e in found if e.subject_id == filled["k1"])
    assert set(one.inputs()) == set(DATASETS["agent"].inputs) == {"task", "files", "tools"}
    assert one.task == "In the k1 budget file, how much was spent on rent in March?" and one.expected_answer == "901"
    assert one.tools == ["inspect_file_as_text"]
    [f] = one.files
    assert isinstance(f, GeneratedFile) and f.name == "march.csv" and f.path.read_text().startswith("category,amount")


def test_verifiers_train_only_on_labelled_subjects(settings, filled):
    tasks, _ = examples(settings, "query_file_verifier")
    assert {(e.subject_id, e.passed, e.label) for e in tasks} == {(filled["vague"], False, "reject"), (filled["k1"], True, "pass")}
    [traj] = examples(settings, "trajectory_verifier")[0]
    assert traj.subject_id == filled["t_wrong"] and traj.passed is False and traj.note == "it never read the file"
    assert isinstance(traj.trajectory, Trajectory) and traj.trajectory.answer == "no idea"
    first = traj.trajectory.steps[0]
    assert first.tool_calls[0].arguments == {"file_path": "march.csv"} and first.tool_calls[0].name == "inspect_file_as_text"
    assert set(traj.inputs()) == {"query", "files", "trajectory", "expected_answer"}


def test_file_generator_and_query_generator_defaults(settings, filled):
    files, _ = examples(settings, "file_generator")
    assert len(files) == 4 and all(isinstance(e.spec, QuerySpec) for e in files)
    [domain] = examples(settings, "query_generator")[0]
    assert domain.subject_id == DOMAIN and domain.domain.startswith(f"{DOMAIN}: ")
    assert domain.tools == ["inspect_file_as_text"] and set(domain.inputs()) == {"domain", "tools", "examples"}
    assert all(set(e.tools) <= {"inspect_file_as_text"} for e in domain.examples)


def test_sql_selects_subjects(settings, filled):
    found, _ = examples(settings, "agent", "select task_id from tasks where query like '%k2%'")
    assert [e.subject_id for e in found] == [filled["k2"]]
    # an unlabelled subject is skipped (and counted) for a verifier
    found, skipped = examples(settings, "query_file_verifier", f"select '{filled['k0']}' as task_id")
    assert found == [] and skipped == 1


def test_sql_must_return_the_id_column(settings, filled):
    with pytest.raises(ConfigError, match="--trainset for agent must return a task_id column; it returned: query"):
        examples(settings, "agent", "select query from tasks")


def test_broken_sql_names_the_flag(settings, filled):
    with pytest.raises(ConfigError, match="--trainset query failed"):
        examples(settings, "agent", "select nonsense from nowhere")


def test_empty_default_sets_say_what_to_run(settings):
    with open_store(settings) as store:
        with pytest.raises(ConfigError, match=r"no labelled trajectories: run `mmat label` first"):
            build_sets(store, "trajectory_verifier", settings=settings)
        with pytest.raises(ConfigError, match=r"no solved tasks in the store: run `mmat synth` first"):
            build_sets(store, "agent", settings=settings)


def test_empty_selection_names_the_sql(settings, filled):
    with open_store(settings) as store:
        with pytest.raises(ConfigError, match=r"--valset selected no usable agent examples: 'select task_id from tasks where 1=0'"):
            build_sets(store, "agent", settings=settings, valset_sql="select task_id from tasks where 1=0")


def test_unknown_program(settings, filled):
    with pytest.raises(ConfigError, match="unknown program 'planner'"):
        examples(settings, "planner")


def test_split_holds_out_a_seeded_share(settings, filled):
    with open_store(settings) as store:
        sets = build_sets(store, "file_generator", settings=settings)
        again = build_sets(store, "file_generator", settings=settings)
        assert (len(sets.train), len(sets.val)) == (3, 1) and not sets.val_from_train
        assert [e.subject_id for e in sets.val] == [e.subject_id for e in again.val]
        assert not {e.subject_id for e in sets.train} & {e.subject_id for e in sets.val}
        # an explicit valset is taken out of the default training selection
        sets = build_sets(store, "agent", settings=settings, valset_sql=f"select '{filled['k0']}' as task_id")
        assert [e.subject_id for e in sets.val] == [filled["k0"]]
        assert sorted(e.subject_id for e in sets.train) == sorted([filled["k1"], filled["k2"]])
        # a single example serves as both, and says so
        single = build_sets(store, "trajectory_verifier", settings=settings)
        assert single.val_from_train and single.train == single.val
