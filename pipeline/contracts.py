"""Data contracts: the Great Expectations suites in data_contracts/, run over Arrow shards.

A suite is a versioned JSON file (`documents.v1.json`) in GX's own suite format. Every expectation carries
`meta.severity`: "critical" failures quarantine a shard, "warning" failures are only reported. The loader
mirrors it into GX's native `severity` field, so GX's results and Data Docs agree with the file.

Why the code is shaped like this (each point a pitfall of GX 1.24 met on this machine):
- GX logs and drops an expectation it cannot build (a misspelled type, an unknown argument). The loader
  builds each expectation itself and raises ContractError naming the file and the expectation instead.
- GX measures a list column as `len(str(list))` and fingerprints a batch by pickling it when a column is
  unhashable, which is slow. Only scalar columns reach GX: a list column is replaced by its lengths under
  its own name (so `words` in GX is the number of words), other nested columns are left out.
- A checkpoint shared across threads returns wrong counts silently: every call builds its own ephemeral
  context, which costs milliseconds next to the validation itself.
- Ephemeral contexts put Data Docs in a new temporary folder: the site directory is set explicitly, and
  validation results are kept beside it so one index lists every shard validated into that directory.
- `import great_expectations` takes seconds: it happens on the first validation, not when this module is
  imported, so commands that never validate do not pay for it.
- A GX run costs about a third of a second whatever the size of its batch: small shards are validated
  together where that gives each shard the verdict it would get alone (see `batch_row_floor`).
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import storage, versions
from pipeline.config import ContractsConfig
from pipeline.errors import UserError

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.data_context import EphemeralDataContext
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

T = TypeVar("T")

SEVERITIES = ("critical", "warning")
SUITE_NAME = re.compile(r"^(?P<contract>[a-z][a-z0-9_]*)\.v(?P<version>[0-9]+)$")
EXPECTATION_KEYS = {"type", "kwargs", "meta", "notes", "description"}
DOCS_RESULTS_DIR = "validation_results"  # beside the site inside data_docs_dir; the index is built from it
UNEXPECTED_SAMPLE = 5  # values of failing rows shown in a summary: enough to see the pattern, small in a manifest
SAMPLE_CHARS = 80
# Expectations whose success on a concatenation of shards implies success on each shard: per-row checks
# (uniqueness too: a part of a unique column is unique) and checks of the schema the shards share.
ROW_LEVEL_PREFIXES = ("expect_column_values_to_", "expect_column_pair_values_to_", "expect_multicolumn_values_to_",
                      "expect_select_column_values_to_", "expect_compound_columns_to_be_unique")
SCHEMA_LEVEL = {"expect_table_columns_to_match_set", "expect_table_columns_to_match_ordered_list",
                "expect_column_to_exist", "expect_table_column_count_to_equal", "expect_table_column_count_to_be_between"}
ROW_COUNT = "expect_table_row_count_to_be_between"
# Expectations that read no more of a column's values than whether each is null.
PRESENCE_ONLY = {"expect_column_values_to_not_be_null", "expect_column_values_to_be_null"}
ROW_CONDITION = "row_condition"  # a column a row condition reads: needed whole


class ContractError(UserError, ValueError):
    """A suite file that cannot be used as written, or a validation that cannot run; names file and cause."""


# ---- suites ---------------------------------------------------------------------------------------------


def suite_path(directory: str | Path, name: str) -> Path:
    return Path(directory) / f"{name}.json"


def read_suite_file(directory: str | Path, name: str) -> dict[str, Any]:
    """The suite JSON, checked for what GX does not check: name, version and a severity per expectation."""
    path = suite_path(directory, name)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"suite {name!r} not found: {path}") from None
    except json.JSONDecodeError as error:
        raise ContractError(f"suite file {path} is not valid JSON: {error}") from None
    _check_suite_header(path, name, data)
    for index, entry in enumerate(data["expectations"]):
        _check_expectation_entry(path, index, entry)
    return data


def _check_suite_header(path: Path, name: str, data: Any) -> None:
    match = SUITE_NAME.match(name)
    if not match:
        raise ContractError(f"suite name {name!r} is not <contract>.v<version>, e.g. documents.v1")
    if not isinstance(data, dict) or data.get("name") != name:
        raise ContractError(f"suite file {path} must be an object whose name is {name!r}")
    version = str((data.get("meta") or {}).get("version"))
    if version != match["version"]:
        raise ContractError(f"suite file {path}: meta.version is {version!r}, its name says {match['version']!r}")
    if not isinstance(data.get("expectations"), list) or not data["expectations"]:
        raise ContractError(f"suite file {path} has no expectations")


def _check_expectation_entry(path: Path, index: int, entry: Any) -> None:
    where = f"suite file {path}, expectation #{index}"
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ContractError(f"{where}: an expectation is an object with a 'type'")
    where += f" ({entry['type']})"
    unknown = sorted(set(entry) - EXPECTATION_KEYS)
    if unknown:
        raise ContractError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(EXPECTATION_KEYS)}")
    severity = (entry.get("meta") or {}).get("severity")
    if severity not in SEVERITIES:
        raise ContractError(f"{where}: meta.severity must be one of {list(SEVERITIES)}, got {severity!r}")


def suite_version(directory: str | Path, name: str) -> str:
    return str(read_suite_file(directory, name)["meta"]["version"])


def suite_versions(config: ContractsConfig) -> dict[str, str]:
    """Suite name -> version of the suites a build validates against, for the manifest."""
    names = (config.documents_suite, config.rejects_suite)
    return {name: suite_version(config.directory, name) for name in names}


def load_suite(directory: str | Path, name: str) -> ExpectationSuite:
    """The suite as a GX ExpectationSuite with exactly the expectations of its file, or ContractError."""
    gx = _import_gx()
    data = read_suite_file(directory, name)
    path = suite_path(directory, name)
    expectations = [_build_expectation(path, index, entry) for index, entry in enumerate(data["expectations"])]
    suite = gx.ExpectationSuite(
        name=name, expectations=expectations, meta=data["meta"], suite_parameters=data.get("suite_parameters"),
    )
    _check_nothing_dropped(path, data["expectations"], suite)
    return suite


def _build_expectation(path: Path, index: int, entry: dict[str, Any]) -> Any:
    from great_expectations.exceptions import ExpectationNotFoundError, InvalidExpectationConfigurationError
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    try:
        configuration = ExpectationConfiguration(**entry, severity=entry["meta"]["severity"])
        return configuration.to_domain_obj()
    except (ExpectationNotFoundError, InvalidExpectationConfigurationError, TypeError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ContractError(
            f"suite file {path}, expectation #{index} ({entry['type']}, kwargs {entry.get('kwargs')}) "
            f"cannot be built by Great Expectations: {message}"
        ) from None


def _check_nothing_dropped(path: Path, entries: list[dict[str, Any]], suite: ExpectationSuite) -> None:
    """GX's suite constructor may still drop or merge expectations; the file is the truth."""
    loaded = [expectation.expectation_type for expectation in suite.expectations]
    declared = [entry["type"] for entry in entries]
    if loaded == declared:
        return
    for index, expected in enumerate(declared):
        if index >= len(loaded) or loaded[index] != expected:
            raise ContractError(
                f"suite file {path}: Great Expectations loaded {len(loaded)} of {len(declared)} expectations; "
                f"expectation #{index} ({expected}, kwargs {entries[index].get('kwargs')}) is missing or changed"
            )


def suite_parameter_names(suite: ExpectationSuite) -> set[str]:
    """Names the suite's expectations take from run-time parameters ({"$PARAMETER": name})."""
    names: set[str] = set()
    for expectation in suite.expectations:
        for value in expectation.configuration.kwargs.values():
            if isinstance(value, dict) and "$PARAMETER" in value:
                names.add(value["$PARAMETER"])
    return names


def batch_row_floor(directory: str | Path, name: str) -> int | None:
    """The fewest rows a shard must hold for a batch's verdict to be its own, or None if the suite can't batch.

    A suite batches when every expectation is row-level or of the schema and none passes on a share of rows
    (`mostly`); a row-count floor then holds per shard by checking each shard's rows, a ceiling never does.
    """
    floor = 0
    for entry in read_suite_file(directory, name)["expectations"]:
        kwargs = entry.get("kwargs", {})
        if kwargs.get("mostly", 1) < 1:
            return None
        if entry["type"] == ROW_COUNT and kwargs.get("max_value") is None:
            floor = max(floor, kwargs.get("min_value") or 0)
        elif entry["type"] not in SCHEMA_LEVEL and not entry["type"].startswith(ROW_LEVEL_PREFIXES):
            return None
    return floor


# ---- validation -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardCheck:
    """A shard to validate: its path, the suite it answers to, and the sha256 it must have (None: unknown)."""

    path: str
    suite: str
    sha256: str | None = None


def validate_shards(
    checks: Sequence[ShardCheck], directory: str | Path = "data_contracts", data_docs_dir: Path | None = None,
    batch_rows: int = 200_000, render_docs: bool = True,
) -> list[dict[str, Any]]:
    """Validate shards; one summary per shard, in the order given (each as validate_shard returns it).

    Readable shards of one suite and schema are validated together, at most `batch_rows` rows per GX run,
    when the suite allows it (batch_row_floor); their summaries then name the `batch`. A batch that fails
    anything is validated again shard by shard, so every failure is counted in its own shard. With
    `render_docs` off, results are stored in `data_docs_dir` for `render_data_docs` to draw later.
    """
    summaries: dict[int, dict[str, Any]] = {}
    tables: dict[int, pa.Table] = {}
    for index, check in enumerate(checks):
        try:
            tables[index] = _read_checked(check)
        except (OSError, pa.ArrowException, storage.IntegrityError) as error:
            summaries[index] = unreadable_result(Path(check.path), check.suite, directory, error)
    for batch in _batches(checks, tables, directory, batch_rows):
        summaries.update(_validate_batch(checks, tables, batch, partial(
            validate_table, directory=directory, data_docs_dir=data_docs_dir, render_docs=render_docs)))
    return [summaries[index] for index in range(len(checks))]


def _read_checked(check: ShardCheck) -> pa.Table:
    table = storage.read_arrow_table(check.path, sha256=check.sha256)
    table.validate(full=True)  # invalid UTF-8 is found here, not deep inside pandas and GX
    return table


def _batches(
    checks: Sequence[ShardCheck], tables: Mapping[int, pa.Table], directory: str | Path, batch_rows: int,
) -> list[list[int]]:
    """Indices of shards to validate in one run: same suite and schema, enough rows each, rows capped."""
    floors = {name: batch_row_floor(directory, name) for name in {checks[i].suite for i in tables}}
    groups: dict[tuple[str, str], list[int]] = {}
    batches: list[list[int]] = []
    for index, table in tables.items():
        floor = floors[checks[index].suite]
        if floor is None or table.num_rows < max(floor, 1):
            batches.append([index])
        else:
            groups.setdefault((checks[index].suite, table.schema.to_string(show_schema_metadata=False)), []).append(index)
    for members in groups.values():
        batches += runs_of_rows(members, lambda index: tables[index].num_rows, batch_rows)
    return batches


def runs_of_rows(items: Sequence[T], rows: Callable[[T], int], limit: int) -> list[list[T]]:
    """Consecutive items cut into runs of at most `limit` rows (an item over it alone), in order."""
    runs: list[list[T]] = []
    held = 0
    for item in items:
        if runs and held + rows(item) <= limit:
            runs[-1].append(item)
            held += rows(item)
        else:
            runs.append([item])
            held = rows(item)
    return runs


def _validate_batch(
    checks: Sequence[ShardCheck], tables: Mapping[int, pa.Table], batch: list[int], validate: Callable[..., dict[str, Any]],
) -> dict[int, dict[str, Any]]:
    first = checks[batch[0]]
    if len(batch) == 1:
        summary = validate(tables[batch[0]], first.suite, name=_docs_name(first.path))
        return {batch[0]: {"shard": first.path, **summary}}
    together = pa.concat_tables([tables[i] for i in batch])
    name = f"{_docs_name(first.path)}-and-{len(batch) - 1}-more"
    summary = validate(together, first.suite, name=name)
    if not summary["success"]:
        return {i: _validate_batch(checks, tables, [i], validate)[i] for i in batch}
    members = [checks[i].path for i in batch]
    return {i: {"shard": checks[i].path, **summary, "rows": tables[i].num_rows, "batch": members} for i in batch}


def _docs_name(path: str | Path) -> str:
    """Split folder + file name: shards of different splits share file names, Data Docs should tell them apart."""
    path = Path(path)
    return f"{path.parent.name}-{path.stem}"


def validate_shard(
    path: str | Path,
    suite_name: str,
    directory: str | Path = "data_contracts",
    data_docs_dir: Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    sha256: str | None = None,
) -> dict[str, Any]:
    """Validate one Arrow IPC stream shard; returns the JSON-serialisable summary of validate_table.

    A shard that cannot be read (missing, truncated, not its manifest's sha256, invalid UTF-8) is one
    failed, critical result naming the reason, not an exception: one bad shard must not hide the others.
    """
    check = ShardCheck(str(path), suite_name, sha256)
    try:
        table = _read_checked(check)
    except (OSError, pa.ArrowException, storage.IntegrityError) as error:
        return unreadable_result(Path(path), suite_name, directory, error)
    summary = validate_table(table, suite_name, directory, data_docs_dir, parameters, name=_docs_name(path))
    return {"shard": check.path, **summary}


def unreadable_result(path: Path, suite_name: str, directory: str | Path, error: Exception) -> dict[str, Any]:
    return {"shard": str(path), "suite": suite_name, "version": suite_version(directory, suite_name),
            "success": False, "critical_failed": True, "rows": 0, "expectations": [], "data_docs": None,
            "error": str(error).splitlines()[0][:300]}


def validate_table(
    table: pa.Table,
    suite_name: str,
    directory: str | Path = "data_contracts",
    data_docs_dir: Path | None = None,
    parameters: Mapping[str, Any] | None = None,
    name: str = "table",
    render_docs: bool = True,
) -> dict[str, Any]:
    """Validate a table against a suite in its own GX context.

    `parameters` supplies the suite's run-time parameters (the task suite's `labels`). `name` names the
    batch in Data Docs. Returns {suite, version, success, critical_failed, rows, expectations, data_docs};
    with `render_docs` off the result is only stored in `data_docs_dir`, and `docs_key` names it for
    `render_data_docs` (rendering costs a validation's worth of CPU: a build renders all its pages at once).
    """
    gx = _import_gx()
    suite = load_suite(directory, suite_name)
    missing = suite_parameter_names(suite) - set(parameters or {})
    if missing:
        raise ContractError(f"suite {suite_name!r} needs parameter(s) {sorted(missing)}; pass them in `parameters`")
    context = _new_context(data_docs_dir if render_docs else None)
    suite = context.suites.add(suite)
    batch = context.data_sources.add_pandas("shards").add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=suite))
    frame = scalar_frame(table, read_suite_file(directory, suite_name)["expectations"])
    run = partial(definition.run, batch_parameters={"dataframe": frame},
                  expectation_parameters=dict(parameters or {}))
    if data_docs_dir is None:
        return summarize(run(), suite.meta, table.num_rows, None)
    if not render_docs:  # validated outside the lock: other processes validate meanwhile, into their own files
        result = run()
        key = _result_key(suite_name, result)
        _keep_result(context, key, data_docs_dir)
        return {**summarize(result, suite.meta, table.num_rows, _docs_index(data_docs_dir)), "docs_key": list(key.to_tuple())}
    # GX writes the result file without a temporary name and the index reads every result file, so a
    # validation writing into a docs folder holds that folder's lock (threads and processes alike)
    with _locked(Path(data_docs_dir) / ".lock"):
        result = run()
        context.build_data_docs(resource_identifiers=[_result_key(suite_name, result)])
    return summarize(result, suite.meta, table.num_rows, _docs_index(data_docs_dir))


def scalar_frame(table: pa.Table, expectations: Sequence[Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """The columns GX can measure: scalars as they are, list columns as their lengths, other nesting left out.

    Given the suite's expectations, GX gets no more of each column than they read, with the same verdicts:
    a column no expectation names reaches it as zeros (its name is all a column-set check needs), and a
    text column only checked for nulls as its lengths (null where the text is). GX hashes and copies every
    column of its frame, so document texts would otherwise cost most of a shard's validation.
    """
    reads = _values_read(expectations) if expectations is not None else None
    columns: dict[str, pa.ChunkedArray | pa.Array] = {}
    for field, column in zip(table.schema, table.columns):
        is_list = pa.types.is_list(field.type) or pa.types.is_large_list(field.type)
        if pa.types.is_nested(field.type) and not is_list:
            continue  # the same columns reach GX whatever the suite reads
        read = None if reads is None else reads.get(field.name, set())
        if read is not None and not read:
            columns[field.name] = pa.array(np.zeros(len(column), dtype=np.int8))
        elif is_list:
            columns[field.name] = pc.list_value_length(column)
        elif read is not None and read <= PRESENCE_ONLY and _has_lengths(field.type):
            columns[field.name] = pc.binary_length(column)
        else:
            columns[field.name] = column
    return pa.table(columns).to_pandas()


def _values_read(expectations: Sequence[Mapping[str, Any]]) -> dict[str, set[str]] | None:
    """Column -> types of the expectations that read its values; None when a row condition is a string
    (a pandas query, whose columns are not parsed here): then every column reaches GX whole."""
    reads: dict[str, set[str]] = {}
    for entry in expectations:
        if entry["type"] in SCHEMA_LEVEL:
            continue  # names the columns, reads no values
        kwargs = entry.get("kwargs", {})
        if isinstance(kwargs.get("row_condition"), str):
            return None
        for name in _named_columns({k: v for k, v in kwargs.items() if k != "row_condition"}):
            reads.setdefault(name, set()).add(entry["type"])
        for name in _named_columns(kwargs.get("row_condition")):
            reads.setdefault(name, set()).add(ROW_CONDITION)
    return reads


def _named_columns(value: Any) -> Iterator[str]:
    """Every string in an expectation's arguments that may name a column (values of column, column_A,
    column_B, column_list, a row condition's column, and so on): reading too many columns is only slower."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _named_columns(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _named_columns(item)


def _has_lengths(type_: pa.DataType) -> bool:
    return pa.types.is_string(type_) or pa.types.is_large_string(type_) or pa.types.is_binary(type_) \
        or pa.types.is_large_binary(type_)


def _import_gx() -> Any:
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # read by GX when it starts; no usage reports from builds
    if "great_expectations" not in sys.modules:
        _load_on_first_use("scipy.stats")
    import great_expectations as gx

    return gx


def _load_on_first_use(name: str) -> None:
    """Import submodule `name` lazily: its code runs when one of its attributes is first read.

    GX imports scipy.stats (`from scipy import stats`) for its distribution expectations, which no suite
    here uses: 0.7 s of the 2.5 s GX takes to import, paid by every build's steps' pool while the last
    partitions run. Set on the parent package too, so `from scipy import stats` finds it there and does
    not import it again (a lookup through the import system would read its attributes, loading it).
    """
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    try:
        spec = importlib.util.find_spec(name)
    except ModuleNotFoundError:
        return  # without it, GX's own import raises the error that names it
    if spec is None or spec.loader is None:
        return
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    setattr(sys.modules[parent], child, module)


def _new_context(data_docs_dir: Path | None) -> EphemeralDataContext:
    gx = _import_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    stores = InMemoryStoreBackendDefaults()
    sites: dict[str, Any] = {}
    if data_docs_dir is not None:
        stores.stores[stores.validation_results_store_name]["store_backend"] = {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(Path(data_docs_dir).resolve() / DOCS_RESULTS_DIR),
        }
        sites["contracts"] = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                              "base_directory": str(Path(data_docs_dir).resolve())},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
    config = DataContextConfig(
        store_backend_defaults=stores,
        data_docs_sites=sites,
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),  # a bar per shard floods task logs
    )
    return gx.get_context(project_config=config, mode="ephemeral")


def _result_key(suite_name: str, result: ExpectationSuiteValidationResult) -> ValidationResultIdentifier:
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    return ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite_name),
                                      run_id=result.meta["run_id"], batch_identifier=result.batch_id)


def _keep_result(context: EphemeralDataContext, key: ValidationResultIdentifier, data_docs_dir: str | Path) -> None:
    """Copy a result from `context`'s in-memory store into the Data Docs folder's, as the run serialised it
    (serialising costs as much as a small validation), under the folder's lock."""
    memory = context.validation_results_store
    serialized = memory.store_backend.get(memory.key_to_tuple(key))
    with _locked(Path(data_docs_dir) / ".lock"):
        disk = _new_context(Path(data_docs_dir)).validation_results_store
        disk.store_backend.set(disk.key_to_tuple(key), serialized)


def _docs_index(data_docs_dir: str | Path) -> str:
    return str(Path(data_docs_dir).resolve() / "index.html")


def render_data_docs(data_docs_dir: str | Path, keys: Sequence[Sequence[str]]) -> str:
    """Render the pages of stored results (`docs_key` of validate_table's summaries) and the index, which
    lists every result in the folder; returns the index. One call renders them all with one template set."""
    from great_expectations.data_context.types.resource_identifiers import ValidationResultIdentifier

    with _locked(Path(data_docs_dir) / ".lock"):
        context = _new_context(Path(data_docs_dir))
        context.build_data_docs(resource_identifiers=[ValidationResultIdentifier.from_tuple(tuple(k)) for k in keys])
    return _docs_index(data_docs_dir)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- summaries ------------------------------------------------------------------------------------------


def summarize(
    result: ExpectationSuiteValidationResult, suite_meta: Mapping[str, Any], rows: int, data_docs: str | None
) -> dict[str, Any]:
    expectations = [_expectation_summary(item.to_json_dict()) for item in result.results]
    return {
        "suite": result.suite_name,
        "version": str(suite_meta["version"]),
        "success": bool(result.success),
        "critical_failed": any(not e["success"] and e["severity"] == "critical" for e in expectations),
        "rows": rows,
        "expectations": expectations,
        "data_docs": data_docs,
    }


def _expectation_summary(item: dict[str, Any]) -> dict[str, Any]:
    config, result = item["expectation_config"], item.get("result") or {}
    kwargs = config["kwargs"]
    summary = {
        "type": config["type"],
        "column": kwargs.get("column") or _pair_columns(kwargs),
        "row_condition": kwargs.get("row_condition"),  # tells apart two checks of one column on different rows
        "severity": config["meta"]["severity"],
        "success": bool(item["success"]),
        "unexpected_count": result.get("unexpected_count"),
        "unexpected_percent": result.get("unexpected_percent"),
        "observed_value": result.get("observed_value"),
    }
    if not item["success"]:
        summary.update(_failure_details(item, result))
    return summary


def _pair_columns(kwargs: Mapping[str, Any]) -> str | None:
    if "column_A" in kwargs:
        return f"{kwargs['column_A']},{kwargs['column_B']}"
    return None


def _failure_details(item: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """What a data engineer needs to see why: a few failing values, missing columns, or GX's error."""
    details: dict[str, Any] = {}
    sample = result.get("partial_unexpected_list")
    if sample:
        details["unexpected_sample"] = [_short(value) for value in sample[:UNEXPECTED_SAMPLE]]
    mismatched = (result.get("details") or {}).get("mismatched")
    if mismatched:
        details["mismatched"] = mismatched
    error = _exception_message(item.get("exception_info") or {})
    if error:
        details["error"] = error
    return details


def _exception_message(info: Mapping[str, Any]) -> str | None:
    """GX reports an expectation that raised in one of two shapes: flat, or keyed by the metric that failed."""
    if "raised_exception" in info:
        return info.get("exception_message") if info["raised_exception"] else None
    messages = sorted({v.get("exception_message") for v in info.values() if isinstance(v, Mapping)} - {None})
    return "; ".join(messages) or None


def _short(value: Any) -> Any:
    if isinstance(value, str) and len(value) > SAMPLE_CHARS:
        return value[:SAMPLE_CHARS] + "…"
    return value


# ---- paths ----------------------------------------------------------------------------------------------


def suite_for(path: Path, config: ContractsConfig) -> str:
    """Reject shards (under a `rejects` folder) have their own suite; everything else is documents."""
    return config.rejects_suite if "rejects" in path.parts else config.documents_suite


def shard_paths(path: str | Path) -> list[Path]:
    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.rglob("*.arrow") if p.name != versions.LEDGER)
    if path.is_file():
        return [path]
    raise ContractError(f"no shard or directory at {path}")


def validate_path(
    path: str | Path,
    config: ContractsConfig | None = None,
    suite_name: str | None = None,
    data_docs_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Validate a shard, or every `*.arrow` under a directory; one summary per shard, in path order.

    Without `suite_name` each shard gets the suite its place implies (see suite_for). Inside a dataset
    version, shards are checked against the manifest's sha256, and a shard the manifest lists but the
    directory lacks is reported as unreadable.
    """
    config = config or ContractsConfig()
    expected = _manifest_hashes(Path(path))
    paths = sorted(set(shard_paths(path)) | {p for p in expected if Path(path) in (p, *p.parents)})
    checks = [ShardCheck(str(shard), suite_name or suite_for(shard, config), expected.get(shard)) for shard in paths]
    return validate_shards(checks, config.directory, data_docs_dir)


def warm_up() -> None:
    """Import Great Expectations (seconds) ahead of the first validation in this process."""
    _import_gx()


def _manifest_hashes(path: Path) -> dict[Path, str]:
    """sha256 by shard path, from the manifest of the version `path` lies in (empty outside a version)."""
    for directory in (path, *path.parents):
        if (directory / versions.MANIFEST).is_file():
            manifest = versions.load_manifest(directory / versions.MANIFEST)
            return {directory / s.path: s.sha256 for s in manifest.shards + manifest.quarantined + manifest.rejects}
    return {}


def validate_task_table(
    table: pa.Table, labels: Sequence[str], config: ContractsConfig | None = None
) -> dict[str, Any]:
    """Validate labelled task data (text, label) against the task suite with the task's declared labels."""
    config = config or ContractsConfig()
    return validate_table(table, config.tasks_suite, config.directory, parameters={"labels": list(labels)})
