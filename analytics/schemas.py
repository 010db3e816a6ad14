"""The snapshot datasets and their schemas: the one place a column is added, renamed or retyped.

Every dataset is hive-partitioned by ``env_name`` and ``date`` (the partition columns live in the
directory names, never in the files, so Spark and DuckDB see no duplicate column). Each file carries
its dataset name and schema version in the Parquet footer. Changes are additive: readers read every
file through the current schema, so a column added in version N reads as null in older files until
``resimhub analytics snapshot`` rewrites them.

``batch_id`` and ``batch_version`` make the datasets safe to rewrite: a batch (one experiment's
training task, one benchmark evaluation, one experiment's history) is always written whole, and when
two copies of a batch exist (a rewrite, or the moment of a compaction), the copy with the highest
``batch_version`` is the batch. Any engine can apply that rule; ReSimHub's readers apply it from the
file footers without touching the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")
PARTITION_SCHEMA = pa.schema([("env_name", pa.string()), ("date", pa.string())])
PARTITION_COLUMNS = tuple(PARTITION_SCHEMA.names)

_BATCH = [
    pa.field("batch_id", pa.string(), nullable=False,
             metadata={"doc": "the batch the row was written in: experiment-<id>-<task>, experiment-<id> (history) "
                              "or evaluation-<id> (benchmark)"}),
    pa.field("batch_version", pa.int64(), nullable=False,
             metadata={"doc": "when the batch was written (ns since the epoch); of two copies of a batch, the "
                              "higher version is the batch"}),
]


@dataclass(frozen=True)
class Dataset:
    name: str
    version: int
    #: Columns stored in the files (the partition columns are not among them).
    schema: pa.Schema
    #: Columns that identify a row within a batch; with ``batch_id`` they identify it in the dataset.
    key: tuple[str, ...]
    #: Order of rows in compacted files: clusters what queries filter on, and compresses better.
    sort_by: tuple[str, ...]
    #: The row's point in time; ``since`` filters on it.
    time_column: str
    description: str

    @property
    def full_schema(self) -> pa.Schema:
        """The schema a reader sees: file columns plus the partition columns."""
        return pa.schema(list(self.schema) + list(PARTITION_SCHEMA))

    def column_docs(self) -> dict[str, str]:
        return {f.name: (f.metadata or {}).get(b"doc", b"").decode() for f in self.schema}


def _f(name: str, type_: pa.DataType, doc: str, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


EPISODES = Dataset(
    name="episodes",
    version=2,
    schema=pa.schema([
        *_BATCH,
        _f("source", pa.string(), "experiment (training and its evaluations) or benchmark (an uploaded "
                                  "or re-evaluated model)"),
        _f("experiment_id", pa.int64(), "null for benchmark evaluations"),
        _f("task_id", pa.string(), "the task that produced the episode"),
        _f("run_id", pa.int64(), "the training run (one seed of an experiment); null for benchmarks"),
        _f("evaluation_id", pa.string(), "null for training episodes"),
        _f("model_id", pa.string(), "the policy: the run's trained model, or the evaluated model"),
        _f("agent", pa.string(), "PPO, A2C, DQN, CEM, QLEARNING; null for uploaded models"),
        _f("seed", pa.int64(), "train: the run's seed; eval: the evaluation's base seed"),
        _f("phase", pa.string(), "train or eval"),
        _f("episode", pa.int64(), "index of the episode within its run or evaluation, from 0"),
        _f("step", pa.int64(), "train: environment steps done when the episode ended; eval: null"),
        _f("env_seed", pa.int64(), "eval in exact mode: the seed the episode's environment was reset with"),
        _f("return", pa.float64(), "undiscounted episode return"),
        _f("length", pa.int64(), "steps in the episode"),
        _f("recorded_at", TIMESTAMP, "when the run or evaluation finished"),
    ]),
    key=("phase", "run_id", "evaluation_id", "episode"),
    sort_by=("experiment_id", "run_id", "evaluation_id", "phase", "episode"),
    time_column="recorded_at",
    description="One row per training or evaluation episode.",
)

EVALUATIONS = Dataset(
    name="evaluations",
    version=2,
    schema=pa.schema([
        *_BATCH,
        _f("source", pa.string(), "experiment or benchmark"),
        _f("evaluation_id", pa.string(), "the evaluation (unique)", nullable=False),
        _f("task_id", pa.string(), "the task it ran under (an experiment's training task, or its own)"),
        _f("model_id", pa.string(), "the evaluated model"),
        _f("model_name", pa.string(), "the model's name as stored"),
        _f("model_format", pa.string(), "the model file's format as detected from its content"),
        _f("model_sha256", pa.string(), "sha256 of the evaluated file"),
        _f("experiment_id", pa.int64(), "null for benchmark evaluations"),
        _f("run_id", pa.int64(), "the training run whose final evaluation this is; null for benchmarks"),
        _f("agent", pa.string(), "null for uploaded models"),
        _f("run_seed", pa.int64(), "the training run's seed"),
        _f("episodes", pa.int64(), "episodes evaluated"),
        _f("seed", pa.int64(), "base seed: episode i is reset with seed + i in exact mode"),
        _f("mode", pa.string(), "exact or fast"),
        _f("mean", pa.float64(), "mean episode return"), _f("std", pa.float64(), "population standard deviation"),
        _f("median", pa.float64(), "median episode return"), _f("min", pa.float64(), "lowest episode return"),
        _f("max", pa.float64(), "highest episode return"),
        _f("iqm", pa.float64(), "interquartile mean"),
        _f("ci_low", pa.float64(), "seeded 95% bootstrap interval of the mean, low end"),
        _f("ci_high", pa.float64(), "... high end"),
        _f("score", pa.float64(), "mean - std"),
        _f("mean_length", pa.float64(), "mean episode length"), _f("total_steps", pa.int64(), "steps, all episodes"),
        _f("latency_ms", pa.float64(), "policy latency per step"),
        _f("steps_per_second", pa.float64(), "environment steps per second"),
        _f("wall_time_s", pa.float64(), "wall time of the evaluation"),
        _f("spec_id", pa.string(), "the Gymnasium spec id evaluated"),
        _f("gymnasium_version", pa.string(), "the Gymnasium version it ran with"),
        _f("evaluated_at", TIMESTAMP, "when the evaluation finished"),
    ]),
    key=("evaluation_id",),
    sort_by=("experiment_id", "run_id", "evaluation_id"),
    time_column="evaluated_at",
    description=('One row per completed evaluation, with the statistics of '
                 'docs/architecture.md, "The evaluation protocol".'),
)

EXPERIMENTS = Dataset(
    name="experiments",
    version=2,
    schema=pa.schema([
        *_BATCH,
        _f("experiment_id", pa.int64(), "the experiment", nullable=False),
        _f("name", pa.string(), "its name"),
        _f("agent", pa.string(), "PPO, A2C, DQN, CEM or QLEARNING"),
        _f("status", pa.string(), "the state entered: created, training, evaluating, completed, failed, "
                                  "cancelled"),
        _f("task_id", pa.string(), "the training task; null for the created row"),
        _f("seeds", pa.list_(pa.int64()), "training seeds (of the task, from the training row on)"),
        _f("hyperparams", pa.string(), "JSON object"),
        _f("total_timesteps", pa.int64(), "budget asked for, if given in timesteps"),
        _f("episodes", pa.int64(), "budget asked for, if given in episodes"),
        _f("eval_episodes", pa.int64(), "episodes of each final evaluation"),
        _f("eval_seed", pa.int64(), "base seed of each final evaluation"),
        _f("training_episodes", pa.int64(), "episodes trained, all seeds"),
        _f("timesteps", pa.int64(), "environment steps trained, all seeds"),
        _f("mean_return", pa.float64(), "completed: mean over seeds of the final evaluation's mean return"),
        _f("iqm", pa.float64(), "completed: IQM across seeds (or across episodes for one seed)"),
        _f("ci_low", pa.float64(), "completed: 95% bootstrap interval, low end"),
        _f("ci_high", pa.float64(), "... high end"),
        _f("statistics_over", pa.string(), "seeds or evaluation episodes"),
        _f("best_return", pa.float64(), "best training episode return"),
        _f("training_duration_s", pa.float64(), "wall time of the slowest seed"),
        _f("training_duration_total_s", pa.float64(), "wall time summed over seeds"),
        _f("reward_threshold", pa.float64(), "the environment's reward threshold, if it has one"),
        _f("max_episode_steps", pa.int64(), "the environment's time limit, if it has one"),
        _f("solved", pa.bool_(), "completed: mean_return >= reward_threshold"),
        _f("created_at", TIMESTAMP, "when the experiment was created"),
        _f("recorded_at", TIMESTAMP, "when the experiment entered this state"),
    ]),
    key=("experiment_id", "task_id", "status"),
    sort_by=("experiment_id", "recorded_at"),
    time_column="recorded_at",
    description="One row per experiment state change; the latest row is the experiment's state.",
)

DATASETS: dict[str, Dataset] = {d.name: d for d in (EPISODES, EVALUATIONS, EXPERIMENTS)}


def dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
