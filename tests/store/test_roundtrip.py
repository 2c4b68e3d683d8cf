"""Property tests: what goes into the store comes back out (nested STRUCT lists, unicode, NULLs, JSON).

One store per module (hypothesis runs many examples; opening a database per example would dominate);
each example writes under fresh keys, so examples cannot see each other's rows.
"""

import json
import uuid

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmat.store import Store
from mmat.store.schema import EMBED_DIM

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

text = st.text(max_size=40)  # any unicode except lone surrogates, NUL included
maybe_text = st.none() | text
json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | text
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
tool_call = st.fixed_dictionaries({
    "name": maybe_text,
    "arguments": json_value,
    "result": maybe_text,
    "duration_ms": st.none() | st.floats(allow_nan=False),
    "error": maybe_text,
})
step = st.fixed_dictionaries({
    "idx": st.integers(-(2**31), 2**31 - 1),
    "thought": maybe_text,
    "code": maybe_text,
    "observation": maybe_text,
    "tool_calls": st.none() | st.lists(st.none() | tool_call, max_size=4),
    "error": maybe_text,
    "images": st.none() | st.lists(maybe_text, max_size=3),
    "duration_ms": st.none() | st.floats(allow_nan=False),
})


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    s = Store.open(tmp_path_factory.mktemp("roundtrip") / "m.duckdb")
    yield s
    s.close()


def _decode_tool_calls(calls):
    if calls is None:
        return None
    return [None if c is None else {**c, "arguments": None if c["arguments"] is None else json.loads(c["arguments"])} for c in calls]


@SETTINGS
@given(steps=st.lists(step, max_size=6, unique_by=lambda s: s["idx"]))
def test_steps_round_trip(shared_store, steps):
    traj_id = uuid.uuid4().hex
    rows = [{"traj_id": traj_id, **s} for s in steps]
    shared_store.writer.put("steps", rows)
    shared_store.writer.flush()
    got = shared_store.sql("SELECT * FROM steps WHERE traj_id = ? ORDER BY idx", [traj_id])
    for g in got:
        g["tool_calls"] = _decode_tool_calls(g["tool_calls"])
    # A JSON column maps None to SQL NULL, so JSON null and "no value" read back alike as None.
    assert got == sorted(rows, key=lambda r: r["idx"])


@SETTINGS
@given(messages=json_value, outputs=json_value, module=maybe_text, tokens=st.none() | st.integers(0, 2**31 - 1))
def test_json_columns_round_trip(shared_store, messages, outputs, module, tokens):
    call_id = uuid.uuid4().hex
    shared_store.writer.put("lm_calls", [{
        "call_id": call_id, "module": module, "messages": messages, "outputs": outputs, "prompt_tokens": tokens,
    }])
    shared_store.writer.flush()
    row = shared_store.sql("SELECT module, messages, outputs, prompt_tokens FROM lm_calls WHERE call_id = ?", [call_id])[0]
    assert row["module"] == module
    assert row["prompt_tokens"] == tokens
    assert (None if row["messages"] is None else json.loads(row["messages"])) == messages
    assert (None if row["outputs"] is None else json.loads(row["outputs"])) == outputs


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(versions=st.lists(st.tuples(st.integers(0, 4), maybe_text, st.booleans()), min_size=1, max_size=15))
def test_upserts_keep_the_last_version_of_each_key(shared_store, versions):
    """Any interleaving of puts and flushes ends with exactly the last value put for each key."""
    prefix = uuid.uuid4().hex
    model = {}
    for key, answer, flush_after in versions:
        traj_id = f"{prefix}-{key}"
        shared_store.writer.put("trajectories", [{"traj_id": traj_id, "answer": answer}])
        model[traj_id] = answer
        if flush_after:
            shared_store.writer.flush()
    shared_store.writer.flush()
    got = shared_store.sql("SELECT traj_id, answer FROM trajectories WHERE traj_id LIKE ?", [prefix + "-%"])
    assert {r["traj_id"]: r["answer"] for r in got} == model


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(vec=arrays(np.float32, EMBED_DIM, elements=st.floats(width=32, allow_nan=False)), caption=maybe_text)
def test_embeddings_round_trip(shared_store, vec, caption):
    image_id = uuid.uuid4().hex
    shared_store.writer.put("pool_images", [{"image_id": image_id, "caption": caption, "embedding": vec}])
    shared_store.writer.flush()
    row = shared_store.sql("SELECT caption, embedding FROM pool_images WHERE image_id = ?", [image_id])[0]
    assert row["caption"] == caption
    assert np.array_equal(np.array(row["embedding"], np.float32), vec)
