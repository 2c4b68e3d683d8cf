"""The store's schema as ordered, named migrations.

A migration is applied once, in order, inside a transaction, and recorded in ``schema_migrations``.
Never edit a migration that has shipped: add a new one. Primary keys are content-hash IDs
(:func:`mmat.ids.content_id`), so the writer can upsert and reruns never duplicate rows.
"""

__all__ = ["MIGRATIONS", "TOOL_CALL_STRUCT", "EMBED_DIM"]

EMBED_DIM = 384  # all-MiniLM-L6-v2

# One tool call made by sandboxed code: recorded by the parent, nested in steps.tool_calls.
TOOL_CALL_STRUCT = (
    "STRUCT(name VARCHAR, arguments JSON, result VARCHAR, duration_ms DOUBLE, error VARCHAR)"
)

_M001_CORE = f"""
CREATE TABLE runs (
    run_id        VARCHAR PRIMARY KEY,   -- content_id(kind, settings, argv) for resumable kinds
    kind          VARCHAR NOT NULL,      -- demo | synth | prefs | finetune | eval | optimize | ...
    command       VARCHAR,               -- the CLI line or API call that started it
    settings      JSON,                  -- Settings.to_record() of the run
    status        VARCHAR,               -- running | done | failed | interrupted
    summary       JSON,
    mmat_version  VARCHAR,
    started_at    TIMESTAMP,
    finished_at   TIMESTAMP
);
CREATE TABLE lm_calls (
    call_id            VARCHAR PRIMARY KEY,
    run_id             VARCHAR,
    module             VARCHAR,          -- DSPy module (program step) that made the call
    model              VARCHAR,
    prompt_tokens      INTEGER,
    completion_tokens  INTEGER,
    cost               DOUBLE,
    latency_ms         DOUBLE,
    cache_hit          BOOLEAN,
    error              VARCHAR,
    task_id            VARCHAR,
    messages           JSON,             -- the request as sent (no keys ever live here)
    outputs            JSON,
    started_at         TIMESTAMP
);
CREATE TABLE tasks (
    task_id          VARCHAR PRIMARY KEY, -- content_id("task", run_id, seed_idx, spec_idx)
    run_id           VARCHAR,
    seed_idx         INTEGER,
    split            VARCHAR,             -- train | eval
    domain           VARCHAR,
    query            VARCHAR,             -- the (possibly rewritten) query the agent sees
    original_query   VARCHAR,
    intended_tools   VARCHAR[],
    file_needs       JSON,
    answer_type      VARCHAR,
    expected_answer  VARCHAR,
    status           VARCHAR,             -- generated | files_ok | verified | rejected | solved | failed
    status_reason    VARCHAR,
    created_at       TIMESTAMP
);
CREATE TABLE files (
    file_id   VARCHAR PRIMARY KEY,        -- content_id(task_id, sha256)
    task_id   VARCHAR,
    name      VARCHAR,                    -- file name the agent sees in its workspace
    path      VARCHAR,                    -- relative to MMAT_HOME/blobs (content-addressed)
    sha256    VARCHAR,
    modality  VARCHAR,                    -- image | document | table | text | code | archive | audio
    mime      VARCHAR,
    bytes     BIGINT,
    source    VARCHAR,                    -- pool | generated | user
    caption   VARCHAR,
    created_at TIMESTAMP
);
CREATE TABLE trajectories (
    traj_id      VARCHAR PRIMARY KEY,     -- content_id("traj", task_id, attempt, controller); prefs walks: see 005
    task_id      VARCHAR,
    run_id       VARCHAR,
    attempt      INTEGER,
    controller   VARCHAR,
    answer       VARCHAR,
    status       VARCHAR,                 -- answered | fallback | error_limit | crashed
    verdict      VARCHAR,                 -- correct | incorrect | NULL (not verified yet)
    n_steps      INTEGER,
    n_errors     INTEGER,
    created_at   TIMESTAMP
);
CREATE TABLE steps (
    traj_id      VARCHAR,
    idx          INTEGER,
    thought      VARCHAR,
    code         VARCHAR,
    observation  VARCHAR,
    tool_calls   {TOOL_CALL_STRUCT}[],
    error        VARCHAR,
    images       VARCHAR[],               -- blob paths of images produced in this step
    duration_ms  DOUBLE,
    PRIMARY KEY (traj_id, idx)
);
CREATE TABLE verdicts (
    verdict_id       VARCHAR PRIMARY KEY,
    subject_kind     VARCHAR,             -- task | trajectory
    subject_id       VARCHAR,
    verifier         VARCHAR,             -- query_file | trajectory | label
    model            VARCHAR,
    passed           BOOLEAN,
    verdict          VARCHAR,
    score            DOUBLE,
    reasons          JSON,
    rewritten_query  VARCHAR,
    created_at       TIMESTAMP
);
CREATE TABLE preference_pairs (
    pair_id         VARCHAR PRIMARY KEY,
    task_id         VARCHAR,
    traj_id         VARCHAR,              -- trajectory whose chosen steps form the context
    step_idx        INTEGER,              -- the pair is for the action at this step index
    chosen          JSON,                 -- {{thought, code, observation, error}}
    rejected        JSON,
    judge           VARCHAR,
    chosen_score    DOUBLE,
    rejected_score  DOUBLE,
    rule            VARCHAR,              -- error | format | margin
    reasons         JSON,
    created_at      TIMESTAMP
);
CREATE TABLE eval_runs (
    eval_run_id  VARCHAR PRIMARY KEY,
    bench        VARCHAR,                 -- gta | gaia | mmat
    bench_path   VARCHAR,
    controller   VARCHAR,
    best_of_n    INTEGER,
    settings     JSON,
    n_items      INTEGER,
    metrics      JSON,
    created_at   TIMESTAMP
);
CREATE TABLE eval_items (
    eval_run_id     VARCHAR,
    item_key        VARCHAR,
    sample_idx      INTEGER,              -- 0 = greedy; 1.. = best-of-N samples
    level           VARCHAR,
    question        VARCHAR,
    answer          VARCHAR,
    gt              JSON,
    counted         BOOLEAN,              -- whether AnsAcc counts this item (e.g. GTA whitelist items)
    ans_acc         JSON,                 -- {{"mat": 1.0, "gta": 0.0, "gaia": ...}}
    tool_precision  DOUBLE,
    tool_recall     DOUBLE,
    tool_exact      BOOLEAN,
    code_exec       DOUBLE,
    n_steps         INTEGER,
    traj_id         VARCHAR,
    error           VARCHAR,
    PRIMARY KEY (eval_run_id, item_key, sample_idx)
);
CREATE TABLE pool_images (
    image_id   VARCHAR PRIMARY KEY,       -- sha256 of the image bytes
    pool       VARCHAR,                   -- builtin | user folder name
    path       VARCHAR,                   -- blob path
    caption    VARCHAR,
    width      INTEGER,
    height     INTEGER,
    embedding  FLOAT[{EMBED_DIM}]
);
CREATE TABLE query_embeddings (
    task_id    VARCHAR PRIMARY KEY,
    embedding  FLOAT[{EMBED_DIM}]
);
"""

# (name, sql). Append only.
MIGRATIONS: list[tuple[str, str]] = [
    ("001_core", _M001_CORE),
]

# A seed is marked done only after all its rows are flushed; a rerun redoes seeds without a 'done' row
# (deleting whatever half of them a kill left behind), so counts are exact after any interruption.
_M002_PROGRESS = """
CREATE TABLE synth_seeds (
    run_id       VARCHAR,
    seed_idx     INTEGER,
    domain       VARCHAR,
    status       VARCHAR,                 -- done | failed (see error_code, error)
    n_specs      INTEGER,
    n_tasks      INTEGER,
    counts       JSON,
    finished_at  TIMESTAMP,
    PRIMARY KEY (run_id, seed_idx)
);
CREATE TABLE prefs_tasks (
    run_id       VARCHAR,
    task_id      VARCHAR,
    status       VARCHAR,                 -- done | failed
    n_pairs      INTEGER,
    reason       VARCHAR,
    finished_at  TIMESTAMP,
    PRIMARY KEY (run_id, task_id)
);
CREATE TABLE optimization_runs (
    opt_run_id     VARCHAR PRIMARY KEY,
    program        VARCHAR,
    optimizer      VARCHAR,
    teacher        VARCHAR,
    n_train        INTEGER,
    n_val          INTEGER,
    metric_before  DOUBLE,
    metric_after   DOUBLE,
    out_path       VARCHAR,
    settings       JSON,
    created_at     TIMESTAMP
);
"""

MIGRATIONS.append(("002_progress_and_optimization", _M002_PROGRESS))

# The agent's prompt depends on its tool list and on whether images were shown: both are needed to
# rebuild the exact conversation for finetuning and exports.
MIGRATIONS.append((
    "003_trajectory_prompt_inputs",
    "ALTER TABLE trajectories ADD COLUMN tools VARCHAR[]; ALTER TABLE trajectories ADD COLUMN multimodal BOOLEAN; "
    "ALTER TABLE files ADD COLUMN position INTEGER;",  # the order the agent was shown the files in
))

# Pairs belong to the prefs run that made them: a resumed run clears only its own half-written pairs.
MIGRATIONS.append(("004_pair_run", "ALTER TABLE preference_pairs ADD COLUMN run_id VARCHAR;"))

# A preference walk (mmat prefs) stores the path it took along the judge's winners as a trajectory too,
# so its pairs' contexts are stored steps; ``origin`` tells such paths from the agent's attempts.
MIGRATIONS.append((
    "005_trajectory_origin",
    "ALTER TABLE trajectories ADD COLUMN origin VARCHAR DEFAULT 'synth'; "  # synth | eval | prefs
    "UPDATE trajectories SET origin = 'eval' WHERE task_id LIKE 'eval:%';",
))

# An eval run is a run: eval_runs.run_id names its `runs` row (and its lm_calls). Each eval item row names
# the task_id its trajectories carry ('eval:<run>:<item>'), how it went wrong (error_kind) and the
# benchmark-specific figures (GTA tool categories and image-generation credit, Agent-X judge scores).
MIGRATIONS.append((
    "006_eval_runs_are_runs",
    "ALTER TABLE eval_runs ADD COLUMN run_id VARCHAR; "
    "ALTER TABLE eval_items ADD COLUMN task_id VARCHAR; "
    "ALTER TABLE eval_items ADD COLUMN error_kind VARCHAR; "
    "ALTER TABLE eval_items ADD COLUMN details JSON; "
    "UPDATE eval_runs SET run_id = eval_run_id; "
    "UPDATE eval_items SET task_id = 'eval:' || eval_run_id || ':' || item_key;",
))

# `mmat import` brings released data sets (MM-Traj, M-TRACE, Pref-X, GTA dialogs, mmat exports) into the store:
# their rows carry origin = 'import' and the file they came from.
MIGRATIONS.append((
    "007_import_source",
    "ALTER TABLE tasks ADD COLUMN source VARCHAR; ALTER TABLE trajectories ADD COLUMN source VARCHAR; "
    "ALTER TABLE preference_pairs ADD COLUMN source VARCHAR;",
))

# A synth seed can fail (an LM stage out of retries, an unreadable reply): why, as a stable code to group
# by and one line of text, and how many times it was tried; a failed seed is retried on rerun.
MIGRATIONS.append((
    "008_synth_seed_failures",
    "ALTER TABLE synth_seeds ADD COLUMN error_code VARCHAR; ALTER TABLE synth_seeds ADD COLUMN error VARCHAR; "
    "ALTER TABLE synth_seeds ADD COLUMN attempts INTEGER DEFAULT 1;",
))

# Attribution and the views for the common questions (README, "Questions the views answer").
# - lm_calls name the seed, trajectory and step of each call (task_id was there; now it is filled).
#   Calls made for a whole seed (query generation) carry seed_idx and no task: task_costs spreads them.
# - trajectories: tools_offered (the list in the agent's prompt, as `tools`) vs tools_used (called).
# - tasks: multimodal = the task has image files; reason_code = status_reason as a code to group by.
from mmat.store.reasons import SPEC_CODES, reason_code_sql  # noqa: E402


def _task_costs_view(create: str, *, own: str, seed: str) -> str:
    """The task_costs view: a task's own calls (``own``) plus an even share of its seed's calls (``seed``)."""
    return f"""{create} task_costs AS
WITH own AS (
    SELECT task_id, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
           sum(cost) AS cost
    FROM lm_calls WHERE {own} GROUP BY 1),
seed AS (
    SELECT run_id, seed_idx, count(*) AS calls, sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens, sum(cost) AS cost
    FROM lm_calls WHERE {seed} GROUP BY 1, 2),
per_seed AS (SELECT run_id, seed_idx, count(*) AS n FROM tasks GROUP BY 1, 2)
SELECT k.task_id, k.run_id, k.seed_idx, k.status, k.reason_code,
       coalesce(o.calls, 0) AS calls, coalesce(o.prompt_tokens, 0) AS prompt_tokens,
       coalesce(o.completion_tokens, 0) AS completion_tokens, o.cost AS own_cost,
       s.cost / p.n AS seed_share_cost,                      -- the seed's query generation, split evenly
       coalesce(s.prompt_tokens, 0) / p.n AS seed_share_prompt_tokens,
       CASE WHEN o.cost IS NULL AND s.cost IS NULL THEN NULL
            ELSE coalesce(o.cost, 0) + coalesce(s.cost / p.n, 0) END AS cost
FROM tasks k
LEFT JOIN own o USING (task_id)
LEFT JOIN seed s ON s.run_id = k.run_id AND s.seed_idx = k.seed_idx
LEFT JOIN per_seed p ON p.run_id = k.run_id AND p.seed_idx = k.seed_idx;
"""

_SPEC_CODES_SQL = ", ".join(f"'{c}'" for c in SPEC_CODES)
_M009_ATTRIBUTION = f"""
ALTER TABLE lm_calls ADD COLUMN seed_idx INTEGER;
ALTER TABLE lm_calls ADD COLUMN traj_id VARCHAR;
ALTER TABLE lm_calls ADD COLUMN step_idx INTEGER;
ALTER TABLE trajectories ADD COLUMN tools_offered VARCHAR[];
ALTER TABLE trajectories ADD COLUMN tools_used VARCHAR[];
ALTER TABLE tasks ADD COLUMN multimodal BOOLEAN;
ALTER TABLE tasks ADD COLUMN reason_code VARCHAR;
UPDATE trajectories SET tools_offered = tools;
UPDATE trajectories SET tools_used = coalesce((
    SELECT list_distinct(flatten(list(list_transform(s.tool_calls, lambda c: c.name) ORDER BY s.idx)))
    FROM steps s WHERE s.traj_id = trajectories.traj_id), []::VARCHAR[]);
UPDATE tasks SET multimodal = EXISTS (SELECT 1 FROM files f WHERE f.task_id = tasks.task_id AND f.modality = 'image');
UPDATE tasks SET reason_code = {reason_code_sql()};

CREATE VIEW tool_calls AS
SELECT u.traj_id, t.task_id, t.run_id, t.origin, u.step_idx, u.call_idx,
       u.c.name AS name, u.c.arguments AS arguments, u.c.result AS result, u.c.duration_ms AS duration_ms,
       u.c.error AS error
FROM (SELECT traj_id, idx AS step_idx, generate_subscripts(tool_calls, 1) - 1 AS call_idx, unnest(tool_calls) AS c
      FROM steps) u
LEFT JOIN trajectories t USING (traj_id);

CREATE VIEW trajectory_costs AS
SELECT t.traj_id, t.task_id, t.run_id, t.origin, t.verdict, count(c.call_id) AS calls,
       coalesce(sum(c.prompt_tokens), 0) AS prompt_tokens, coalesce(sum(c.completion_tokens), 0) AS completion_tokens,
       sum(c.cost) AS cost, coalesce(sum(c.latency_ms), 0) AS latency_ms
FROM trajectories t LEFT JOIN lm_calls c ON c.traj_id = t.traj_id
GROUP BY ALL;

{_task_costs_view("CREATE VIEW", own="task_id IS NOT NULL", seed="task_id IS NULL AND seed_idx IS NOT NULL")}
CREATE VIEW stage_funnel AS
WITH k AS (
    SELECT run_id, count(*) AS specs,
           count(*) FILTER (WHERE reason_code IS NULL OR reason_code NOT IN ({_SPEC_CODES_SQL})) AS generated,
           count(*) FILTER (WHERE reason_code IS NULL OR reason_code NOT IN ({_SPEC_CODES_SQL}, 'files_failed')) AS files_ok,
           count(*) FILTER (WHERE reason_code IS NULL OR reason_code NOT IN ({_SPEC_CODES_SQL}, 'files_failed', 'rules_rejected'))
               AS rules_passed,
           count(*) FILTER (WHERE status IN ('verified', 'solved') OR reason_code = 'no_verified_trajectory') AS verified,
           count(*) FILTER (WHERE status = 'solved') AS solved
    FROM tasks GROUP BY 1),
t AS (
    SELECT run_id, count(*) AS trajectories, count(*) FILTER (WHERE verdict = 'correct') AS trajectories_correct
    FROM trajectories GROUP BY 1),
s AS (SELECT run_id, count(*) AS seeds FROM synth_seeds WHERE status = 'done' GROUP BY 1)
SELECT r.run_id, r.kind, r.status, coalesce(s.seeds, 0) AS seeds, coalesce(k.specs, 0) AS specs,
       coalesce(k.generated, 0) AS generated, coalesce(k.files_ok, 0) AS files_ok,
       coalesce(k.rules_passed, 0) AS rules_passed, coalesce(k.verified, 0) AS verified,
       coalesce(k.solved, 0) AS solved, coalesce(t.trajectories, 0) AS trajectories,
       coalesce(t.trajectories_correct, 0) AS trajectories_correct
FROM runs r LEFT JOIN k USING (run_id) LEFT JOIN t USING (run_id) LEFT JOIN s USING (run_id)
WHERE k.run_id IS NOT NULL OR t.run_id IS NOT NULL;
"""
MIGRATIONS.append(("009_attribution_and_views", _M009_ATTRIBUTION))

# - runs.owner: "host pid start-ticks" of the process running it, so a row a killed process left `running`
#   is marked failed by the next run (mmat.store.runs.mark_abandoned_runs) and shown failed by `mmat runs`.
# - lm_calls.seed_call: a call made for a whole synth seed (query generation), before any task id existed.
#   When the seed's rows are written its seed calls get the task_id of the seed's first task (the smallest
#   task_id: a stable choice), so every stored synth call names a task; task_costs still shares their cost
#   evenly over the seed's tasks. Calls of a seed that failed before making any task keep task_id NULL.
_M010_OWNER_AND_SEED_CALLS = """
ALTER TABLE runs ADD COLUMN owner VARCHAR;
ALTER TABLE lm_calls ADD COLUMN seed_call BOOLEAN;
UPDATE lm_calls SET seed_call = (task_id IS NULL AND seed_idx IS NOT NULL);
UPDATE lm_calls SET task_id = (SELECT min(k.task_id) FROM tasks k
                               WHERE k.run_id = lm_calls.run_id AND k.seed_idx = lm_calls.seed_idx)
WHERE seed_call AND task_id IS NULL;

""" + _task_costs_view("CREATE OR REPLACE VIEW", own="task_id IS NOT NULL AND NOT coalesce(seed_call, false)",
                       seed="coalesce(seed_call, false) AND seed_idx IS NOT NULL")
MIGRATIONS.append(("010_run_owner_and_seed_calls", _M010_OWNER_AND_SEED_CALLS))
