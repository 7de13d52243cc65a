"""``longtail``: the command line, a thin layer over the Python API (``longtail.api``) and the store.

Commands are listed in the order data flows through them: data → finetune/embed → train → tune → eval →
recommend → store → config. Every module beyond typer is imported inside the command that needs it, so
``longtail --help`` and ``longtail --version`` load no numpy, torch or Ray. Every input error is one line on
stderr naming the file, key or value, and exit code 2 (``LONGTAIL_DEBUG=1`` shows tracebacks).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from longtail import __version__
from longtail.errors import USER_ERRORS, ConfigError, DataError

ORDER = ("data", "finetune", "embed", "train", "tune", "eval", "recommend", "store", "report", "config")


class DataFlowOrder(TyperGroup):
    """Commands in the order data flows through them, not alphabetically."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


app = typer.Typer(
    help="longtail: surface the long tail of a catalog.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    cls=DataFlowOrder,
)
data_app = typer.Typer(help="Import, validate and split datasets; forget users.", no_args_is_help=True)
app.add_typer(data_app, name="data")
store_app = typer.Typer(help="The serving state store (SQLite file or PostgreSQL URL).", no_args_is_help=True)
app.add_typer(store_app, name="store")
report_app = typer.Typer(
    help="Reports on what the service served and how users engaged.", no_args_is_help=True
)
app.add_typer(report_app, name="report")
config_app = typer.Typer(help="The train config: resolved values and the schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")

RAY_USERS = 20_000  # `longtail recommend --bundle` runs as a Ray Data job from this many users
FORGET_HELP = (
    "Leave these users out: a store (its erased users) or a file of user ids; their data is not read."
)


class Format(StrEnum):
    recbole = "recbole"
    movielens = "movielens"
    csv = "csv"
    parquet = "parquet"
    jsonl = "jsonl"


class Part(StrEnum):
    valid = "valid"
    test = "test"


class UnknownItems(StrEnum):
    error = "error"
    drop = "drop"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"longtail {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """longtail: surface the long tail of a catalog."""


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Input errors become one line on stderr and exit code 2; anything else one line and exit code 1
    (``LONGTAIL_DEBUG=1`` re-raises, with the traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except USER_ERRORS as err:
            typer.echo(f"error: {err}", err=True)  # one unwrapped line, greppable
            raise typer.Exit(2) from None
        except Exception as err:
            if os.environ.get("LONGTAIL_DEBUG"):
                raise
            if type(err).__name__ == "ValidationError":  # pydantic: a value that does not fit its field
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in err.errors()  # type: ignore[attr-defined]
                )
                typer.echo(f"error: {problems}", err=True)
                raise typer.Exit(2) from None
            message = " ".join(str(err).split()) or type(err).__name__
            typer.echo(
                f"error: {type(err).__name__}: {message} (LONGTAIL_DEBUG=1 shows the traceback)", err=True
            )
            raise typer.Exit(1) from None

    return wrapper


def log_line(tag: str) -> Callable[[str], None]:
    from longtail.console import console

    return lambda m: console.print(f"[{tag}] {m}", markup=False, highlight=False, soft_wrap=True)


def without_forgotten(data: Path, forget: str | None, work: Path) -> tuple[Path, set[str]]:
    """The dataset to read: ``data``, or with ``--forget`` its version without those users (cached under
    ``work/.longtail-data``), and the users left out."""
    if not forget:
        return data, set()
    from longtail.cli_support import forgotten_dataset
    from longtail.console import console

    version, gone = forgotten_dataset(data, forget, work / ".longtail-data")
    console.print(f"without {len(gone)} forgotten users: {version}")
    return version, gone


def parse_mapping(pairs: list[str]) -> dict[str, str]:
    """``["uid=user_id"]`` → ``{"uid": "user_id"}``."""
    mapping = {}
    for pair in pairs:
        column, sep, field = pair.partition("=")
        if not sep or not column or not field:
            raise ConfigError(f"--map {pair!r}: expected COLUMN=FIELD, e.g. --map uid=user_id")
        mapping[column] = field
    return mapping


def require_dataset(data: Path) -> None:
    if not (Path(data) / "manifest.json").is_file():
        raise DataError(
            str(data),
            "not a prepared dataset (no manifest.json)",
            expected="a directory of `longtail data prepare`",
        )


# ---- data ---------------------------------------------------------------------------------------------
@data_app.command("prepare")
@friendly
def data_prepare(
    out: Annotated[Path, typer.Option(help="Output dataset directory.")],
    dataset: Annotated[str | None, typer.Option(help="A named dataset, e.g. ml-100k.")] = None,
    source: Annotated[Path | None, typer.Option(help="Raw file or directory to import.")] = None,
    format: Annotated[Format | None, typer.Option("--format", help="Format of --source.")] = None,
    map: Annotated[list[str] | None, typer.Option("--map", help="COLUMN=FIELD, repeatable.")] = None,
    template: Annotated[
        str | None, typer.Option(help='Item text template, e.g. "{title}. {genres}".')
    ] = None,
    list_field: Annotated[
        list[str] | None, typer.Option(help="Item field of space-separated tokens.")
    ] = None,
    unknown_items: Annotated[
        UnknownItems, typer.Option(help="Interactions on items not in the item table.")
    ] = UnknownItems.error,
    seed: Annotated[int, typer.Option(help="Seed of the cold-item draw.")] = 2024,
) -> None:
    """Import a dataset, validate it, make the warm, cold and leave-one-out splits, write it as Parquet."""
    from longtail.api import prepare
    from longtail.console import console
    from longtail.console import out as stdout

    with console.status("importing, splitting and writing…"):
        prepared = prepare(
            source,
            dataset=dataset,
            out=out,
            format=format.value if format else None,
            mapping=parse_mapping(map or []),
            template=template,
            list_fields=tuple(list_field or ()),
            unknown_items=unknown_items.value,
            seed=seed,
        )
    manifest = prepared.manifest
    stdout.print_json(
        json.dumps({k: manifest[k] for k in ("rows", "catalog_size", "users", "splits", "import")})
    )
    console.print(f"wrote {out}")


@data_app.command("forget")
@friendly
def data_forget(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    users: Annotated[
        str, typer.Option(help="A file of user ids (one per line), or a store whose erased users go.")
    ],
    out: Annotated[Path, typer.Option(help="The new dataset directory (the source stays as it is).")],
) -> None:
    """Write a new dataset version without some users' interactions (e.g. everyone erased while serving)."""
    from longtail.cli_support import forgotten_users
    from longtail.console import console
    from longtail.data.forget import forget_users

    gone = forgotten_users(users)
    manifest = forget_users(data, gone, out)
    removed = manifest["import"]["forgotten_interactions"]
    console.print(f"wrote {out}: {len(gone)} users forgotten, {removed} interactions removed")


# ---- the language model -----------------------------------------------------------------------------
@app.command("finetune")
@friendly
def finetune_cmd(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    out: Annotated[
        Path, typer.Option(help="Output encoder directory (Hugging Face and sentence-transformers).")
    ],
    config: Annotated[
        Path | None, typer.Option(help="Train config YAML, e.g. train_configs/ml100k-cpu.yaml.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split to train on (default: the config's).")] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. finetune.epochs=2")
    ] = None,
) -> None:
    """Fine-tune the item text encoder on the train split (Ray Train + DeepSpeed)."""
    from longtail.config import TrainConfig, load_config
    from longtail.console import out as stdout
    from longtail.data.encoded import load_split_data
    from longtail.train.cluster import connect
    from longtail.train.finetune import finetune

    cfg = load_config(TrainConfig, config, overrides)
    require_dataset(data)
    split_data = load_split_data(data, split or cfg.split, cfg.events)
    connect()
    result = finetune(split_data, cfg, out)
    stdout.print_json(json.dumps({"encoder": str(result.encoder_dir), "metrics": result.metrics}))


@app.command("embed")
@friendly
def embed_cmd(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory (its items.parquet is embedded).")],
    out: Annotated[Path, typer.Option(help="Output Parquet: item_id, vector.")],
    encoder: Annotated[
        str | None, typer.Option(help="Encoder directory or name (default: the config's).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Train config YAML (embed and encoder sections).")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. embed.actors=2")
    ] = None,
) -> None:
    """Embed every catalog item with Ray Data over a pool of encoder actors."""
    from longtail.config import TrainConfig, load_config
    from longtail.console import console
    from longtail.data import read_table
    from longtail.train.cluster import connect
    from longtail.train.embed import embed_catalog

    cfg = load_config(TrainConfig, config, overrides)
    items = read_table(data, "items")
    if items is None:
        raise DataError(str(data), "no items.parquet", expected="a directory made by `longtail data prepare`")
    connect()
    table = embed_catalog(
        items.column("item_id").to_numpy(zero_copy_only=False),
        items.column("text").to_numpy(zero_copy_only=False),
        encoder or cfg.encoder.name,
        cfg.encoder.max_length,
        cfg.embed,
        out,
    )
    console.print(f"embedded {table.num_rows} items into {out}")


# ---- train and tune ---------------------------------------------------------------------------------
@app.command("train")
@friendly
def train_cmd(
    data: Annotated[
        str, typer.Option(help="Prepared dataset directory, or a dataset name (prepared into data/NAME).")
    ],
    out: Annotated[Path, typer.Option(help="Output bundle directory.")],
    config: Annotated[
        Path | None, typer.Option(help="Train config YAML; default: built-in defaults for any data.")
    ] = None,
    split: Annotated[str | None, typer.Option(help="Split to train on (default: the config's).")] = None,
    forget: Annotated[str | None, typer.Option(help=FORGET_HELP)] = None,
    mlflow: Annotated[
        bool, typer.Option(help="Log the run to MLflow (params, per-epoch metrics, plots).")
    ] = True,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else OUT/../mlflow.db."),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. ranker.epochs=3")
    ] = None,
) -> None:
    """The whole chain: fine-tune → embed → graph → fit → select on valid → evaluate → bundle."""
    from longtail.api import train
    from longtail.console import console, metric_table
    from longtail.console import out as stdout
    from longtail.eval.evaluate import EvalResult

    bundle = train(
        data, out=out, config=config, overrides=overrides, split=split, forget=forget, log=log_line("train")
    )
    rows = [EvalResult(f"hybrid/{part}", part, 0, bundle.metrics[part]) for part in ("valid", "test")]
    stdout.print(metric_table(rows, f"bundle {bundle.path} (version {bundle.version})"))
    if mlflow:
        from longtail.tracking import TRAIN_EXPERIMENT, log_train_run, tracking_uri

        uri = tracking_uri(out, mlflow_uri)
        run_id = log_train_run(uri, bundle.path, [out.with_name(out.name + "-alpha-sweep.png")])
        console.print(f"mlflow: run {run_id} in experiment {TRAIN_EXPERIMENT} at {uri}")


@app.command("tune")
@friendly
def tune_cmd(
    space: Annotated[Path, typer.Option(help="Search space YAML, e.g. tune_spaces/hybrid.yaml.")],
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    out: Annotated[
        Path, typer.Option(help="Sweep directory: experiment/, best-config.yaml, trials.*, pareto.png.")
    ],
    config: Annotated[
        Path | None, typer.Option(help="Base train config; the space's keys override it.")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Trials to run.")] = 8,
    concurrency: Annotated[int, typer.Option(min=1, help="Trials at once.")] = 1,
    cpus_per_trial: Annotated[
        float, typer.Option(min=0.1, help="CPUs of each trial's Ray Train workers.")
    ] = 1.0,
    gpus_per_trial: Annotated[int, typer.Option(min=0, help="GPUs per trial (one worker each).")] = 0,
    objective: Annotated[
        str, typer.Option(help="ndcg@10, tail_recall@20, or a weighted sum: 0.7*ndcg@10+0.3*tail_recall@20.")
    ] = "ndcg@10",
    resume: Annotated[bool, typer.Option(help="Continue the interrupted sweep in --out.")] = False,
    stages: Annotated[
        Path | None,
        typer.Option(help="Stage cache to reuse, e.g. bundles/.longtail-stages; default: OUT/stages."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search algorithm.")] = 0,
    mlflow: Annotated[
        bool, typer.Option(help="Log every trial to MLflow (params, per-epoch metrics).")
    ] = True,
    mlflow_uri: Annotated[
        str | None,
        typer.Option(help="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else OUT/../mlflow.db."),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides of the base config")
    ] = None,
) -> None:
    """Sweep with Ray Tune (Optuna, ASHA on validation); writes the best train config."""
    from longtail.config import TrainConfig, load_config
    from longtail.console import console
    from longtail.console import out as stdout
    from longtail.train.cluster import connect
    from longtail.tune.space import load_space
    from longtail.tune.sweep import check_sweep, run_sweep
    from longtail.tune.trials import Objective, markdown_table

    params = load_space(space)
    base = load_config(TrainConfig, config, overrides)
    goal = Objective.parse(objective)
    require_dataset(data)
    check_sweep(out, resume, cpus_per_trial)  # before Ray starts: a refused sweep returns at once
    connect()
    callbacks, uri, experiment = [], None, f"longtail-tune-{out.resolve().name}"
    if mlflow:
        from longtail.tracking import tracking_uri
        from longtail.tune.tracking import TrialTracker

        uri = tracking_uri(out, mlflow_uri)
        callbacks.append(TrialTracker(uri, experiment))
    result = run_sweep(
        params,
        base,
        data_dir=data,
        out=out,
        objective=goal,
        samples=samples,
        concurrency=concurrency,
        cpus_per_trial=cpus_per_trial,
        gpus_per_trial=gpus_per_trial,
        resume=resume,
        seed=seed,
        stages=stages,
        callbacks=callbacks,
        log=log_line("tune"),
    )
    stdout.print(markdown_table(result.trials), markup=False, highlight=False, soft_wrap=True)
    stdout.print(
        f"best config: {result.best_config}\ntrials: {result.table}\nPareto front: {result.pareto_plot}"
    )
    if uri is not None:
        from longtail.tracking import log_sweep_summary

        log_sweep_summary(
            uri, experiment, [result.best_config, result.table, result.pareto_plot], result.best
        )
        console.print(
            f"mlflow: {len(result.trials)} trials and a summary run in experiment {experiment} at {uri}"
        )


# ---- evaluate and recommend ---------------------------------------------------------------------------
@app.command("eval")
@friendly
def eval_cmd(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    out: Annotated[Path, typer.Option(help="Report JSON path (.md and .png are written beside it).")],
    model: Annotated[
        list[str] | None, typer.Option(help="Baseline: mostpop, itemknn or bpr. Repeatable.")
    ] = None,
    bundle: Annotated[Path | None, typer.Option(help="A trained bundle to evaluate (as 'hybrid').")] = None,
    split: Annotated[str, typer.Option(help="Split name: warm, cold, loo or given.")] = "warm",
    part: Annotated[Part, typer.Option(help="Part to evaluate.")] = Part.test,
    config: Annotated[Path | None, typer.Option(help="Train config YAML (its baselines section).")] = None,
    forget: Annotated[str | None, typer.Option(help=FORGET_HELP)] = None,
    keep_seen: Annotated[
        bool, typer.Option(help="The bundle may list seen items again (unmasked protocol; no --model).")
    ] = False,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. baselines.bpr.epochs=10")
    ] = None,
) -> None:
    """Evaluate models on a split with full ranking; write JSON, Markdown and a PNG plot."""
    from longtail.config import BASELINE_NAMES

    names = model or ([] if bundle or keep_seen else ["mostpop"])
    unknown = [n for n in names if n not in BASELINE_NAMES]
    if unknown:
        raise ConfigError(f"--model {unknown[0]!r}: expected one of {', '.join(BASELINE_NAMES)}")
    require_dataset(data)  # both checks before the heavy imports: a mistyped command fails at once
    from longtail.api import evaluate
    from longtail.console import metric_table, progress_tasks
    from longtail.console import out as stdout
    from longtail.data import read_manifest
    from longtail.eval.report import write_report

    data, _ = without_forgotten(data, forget, out.parent)
    with progress_tasks() as start:
        report = evaluate(
            bundle,
            data,
            split=split,
            part=part.value,
            models=names,
            config=config,
            overrides=overrides,
            keep_seen=keep_seen,
            progress=lambda name: start(f"rank {name}"),
        )
    context = {"dataset": read_manifest(data)["source"], "split": split, "part": part.value}
    if keep_seen:
        context["seen_items"] = "kept (unmasked)"
    paths = write_report(report.results, out, context)
    stdout.print(metric_table(report.results, f"{context['dataset']} · {split} · {part.value}"))
    stdout.print(f"report: {paths['json']}  table: {paths['markdown']}  plot: {paths['plot']}")
    if bundle is not None:
        from longtail.cli_support import bundle_pipeline, report_term_shares
        from longtail.data.encoded import load_split_data

        split_data = load_split_data(data, split, _bundle_events(bundle))
        report_term_shares(bundle_pipeline(bundle, split_data, data), split_data, part.value, out)


def _bundle_events(bundle: Path | None) -> Any:
    from longtail.cli_support import bundle_events

    return bundle_events(bundle)


@app.command("recommend")
@friendly
def recommend_cmd(
    data: Annotated[Path, typer.Option(help="Prepared dataset directory.")],
    out: Annotated[Path, typer.Option(help="Output recs.jsonl.")],
    model: Annotated[str, typer.Option(help="Baseline: mostpop, itemknn or bpr.")] = "mostpop",
    bundle: Annotated[Path | None, typer.Option(help="Recommend with a trained bundle instead.")] = None,
    split: Annotated[str, typer.Option(help="Split name.")] = "warm",
    part: Annotated[
        Part, typer.Option(help="test: exclude train+valid items; valid: exclude train items.")
    ] = Part.test,
    users: Annotated[
        str, typer.Option(help="all, test, valid, or a file with one user id per line.")
    ] = "all",
    k: Annotated[int, typer.Option(min=1, max=10000, help="List length.")] = 20,
    explain: Annotated[
        bool, typer.Option(help="With --bundle: add term contributions and attended items.")
    ] = False,
    show: Annotated[int, typer.Option(min=0, help="Print this many example lists with item texts.")] = 0,
    ray_job: Annotated[
        bool | None,
        typer.Option(
            "--ray/--no-ray",
            help=f"With --bundle: a Ray Data job over pipeline actors (default: from {RAY_USERS} users)",
        ),
    ] = None,
    actors: Annotated[int, typer.Option(min=1, help="Pipeline actors of the Ray Data job.")] = 2,
    config: Annotated[Path | None, typer.Option(help="Train config YAML (its baselines section).")] = None,
    forget: Annotated[str | None, typer.Option(help=FORGET_HELP)] = None,
    overrides: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE overrides.")] = None,
) -> None:
    """Write top-k lists, one JSON line per user, seen items excluded."""
    from longtail.cli_support import bundle_pipeline, explained_lists, print_example, select_users
    from longtail.config import TrainConfig, load_config
    from longtail.console import console, progress_bar
    from longtail.data.encoded import load_split_data
    from longtail.eval.evaluate import history_parts, rank
    from longtail.model.factory import build_baseline

    baselines = load_config(TrainConfig, config, overrides).baselines
    require_dataset(data)
    data, gone = without_forgotten(data, forget, out.parent)
    split_data = load_split_data(data, split, _bundle_events(bundle))
    chosen = select_users(users, split_data, part.value, gone)
    histories = split_data.histories(history_parts(part.value))
    notes = None
    if bundle is not None and explain:
        pipe = bundle_pipeline(bundle, split_data, data)
        lists, notes = explained_lists(pipe, histories, chosen, k, split_data.item_ids)
    elif bundle is not None and (ray_job if ray_job is not None else len(chosen) >= RAY_USERS):
        from longtail.recommend.batch import recommend_job
        from longtail.train.cluster import connect

        bundle_pipeline(bundle, split_data, data)  # refuse a wrong bundle before starting actors
        connect()
        lists = recommend_job(bundle, data, split, part.value, chosen, k, actors)
    else:
        if bundle is not None:
            from longtail.recommend.recommender import PipelineRecommender

            fitted = PipelineRecommender(bundle_pipeline(bundle, split_data, data))
        else:
            fitted = build_baseline(model, baselines)
            fitted.fit(split_data)
        with progress_bar("recommend") as update:
            lists = rank(fitted, split_data, chosen, histories, k, update)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for row, (user, top) in enumerate(zip(chosen, lists, strict=True)):
            line = {
                "user_id": split_data.user_ids[user],
                "items": [split_data.item_ids[i] for i in top if i >= 0],
            }
            if notes is not None:
                line["explanations"] = notes[row]
            fh.write(json.dumps(line) + "\n")
            if row < show:
                print_example(line, user, histories, split_data)
    console.print(f"wrote {len(chosen)} lists to {out}")


# ---- the serving store ----------------------------------------------------------------------------------
@store_app.command("init")
@friendly
def store_init(
    store: Annotated[str, typer.Argument(help="SQLite file path, or postgresql://user@host:port/db.")],
) -> None:
    """Create the store's tables (idempotent); the Serve app refuses a store that does not exist."""
    from longtail.console import console
    from longtail.store import is_postgres, open_store

    if not is_postgres(store):
        Path(store).expanduser().parent.mkdir(parents=True, exist_ok=True)
    console.print(f"store ready: {open_store(store, create=True).describe()}")


@store_app.command("migrate")
@friendly
def store_migrate(
    source: Annotated[
        str, typer.Argument(help="The store to copy: a SQLite file of any schema, or a postgresql:// URL.")
    ],
    destination: Annotated[
        str,
        typer.Argument(
            help="A new SQLite file (or SOURCE itself: upgrade in place), or an empty PostgreSQL database."
        ),
    ],
) -> None:
    """Copy a store into a new one of the current schema: events, items, vectors and erasures are kept."""
    from longtail.console import console
    from longtail.store.migrate import migrate

    done = migrate(source, destination)
    rows = ", ".join(f"{n} {table}" for table, n in done.rows.items())
    console.print(f"migrated schema {done.source_schema} → {done.destination}: {rows}")
    if done.backup is not None:
        console.print(f"the old file is kept as {done.backup}")


@store_app.command("erased")
@friendly
def store_erased(
    store: Annotated[str, typer.Argument(help="SQLite file path, or postgresql:// URL.")],
) -> None:
    """Print the erased users' ids, one per line (input for `longtail data forget --users`)."""
    from longtail.store import open_store

    for user in sorted(open_store(store).erased_users()):
        typer.echo(user)


# ---- reports ----------------------------------------------------------------------------------------------
@report_app.command("online")
@friendly
def report_online(
    store: Annotated[str, typer.Option(help="The serving store: SQLite file or postgresql:// URL.")],
    since: Annotated[
        str | None,
        typer.Option(help="Only lists shown in this last span: 90m, 24h, 7d… (default: all kept)."),
    ] = None,
    control: Annotated[
        str | None, typer.Option(help="The arm others are compared with (default: first).")
    ] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report as JSON here.")
    ] = None,
    plot_out: Annotated[
        Path | None, typer.Option("--plot", help="Also plot the rates per arm (PNG) here.")
    ] = None,
) -> None:
    """Per-arm engagement of served lists (all, head, tail, never-touched items; per shelf) with 95%
    intervals, and which arm is ahead of the control — or that the data cannot tell yet."""
    import time

    from longtail.store import online as report
    from longtail.store import open_store
    from longtail.store.tracking import since_of

    try:
        start = since_of(None if since is None else report.parse_duration(since), time.time())
        built = report.build_report(open_store(store).online_rows(start), control)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    typer.echo(report.render(built))
    if json_out is not None:
        typer.echo(f"json: {report.write_json(built, json_out)}")
    if plot_out is not None:
        typer.echo(f"plot: {report.plot(built, plot_out)}")


# ---- config -----------------------------------------------------------------------------------------------
@config_app.command("show")
@friendly
def config_show(
    config: Annotated[
        Path | None, typer.Option(help="Train config YAML; default: the built-in defaults.")
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE overrides, e.g. ranker.epochs=3")
    ] = None,
) -> None:
    """Print the resolved train config (the file and the overrides over the defaults) as YAML."""
    import yaml

    from longtail.config import TrainConfig, load_config

    typer.echo(
        yaml.safe_dump(load_config(TrainConfig, config, overrides).model_dump(), sort_keys=False), nl=False
    )


@config_app.command("schema")
@friendly
def config_schema(
    serve: Annotated[bool, typer.Option(help="The Serve app's args instead of the train config.")] = False,
) -> None:
    """Print the JSON schema of the train config (every key, type, default and meaning)."""
    if serve:
        from longtail.serve.knobs import AppArgs

        schema = AppArgs.model_json_schema()
    else:
        from longtail.config import TrainConfig

        schema = TrainConfig.model_json_schema()
    typer.echo(json.dumps(schema, indent=2, ensure_ascii=False))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
