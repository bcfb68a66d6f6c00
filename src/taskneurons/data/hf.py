"""Tasks from Hugging Face datasets (``save_to_disk`` folders, local JSON files, Hub names).

An :class:`HFTaskSpec` says where the dataset is and which columns hold what; :func:`load_hf_task`
resolves the source to a ``DatasetDict`` (:func:`_load_source`), checks the
splits and columns (:func:`_check_splits`), maps raw outputs to labels (:class:`_LabelMapper`),
converts the rows (:func:`_raw_rows`), settles the label list (:func:`_label_list`) and builds
the validated examples.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from taskneurons.config import Config
from taskneurons.data.tasks import (
    DEFAULT_INSTRUCTION,
    DEFAULT_METRIC,
    Task,
    TaskFormatError,
    check_kind,
    check_labels,
    make_example,
)

#: One dataset row before validation: (where, input, label or reference, references).
_RawRow = tuple[str, Any, Any, Any]


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError(
            'loading Hugging Face datasets needs the "datasets" package: '
            'pip install "taskneurons[hf]"'
        ) from None
    return datasets


@dataclass
class HFTaskSpec(Config):
    """A Hugging Face dataset as a task: where it is and which columns hold what.

    The arguments of :func:`load_hf_task`, and the contents of a task spec file
    (:mod:`taskneurons.data.spec`).

    Attributes:
        hf: a folder written by ``DatasetDict.save_to_disk`` (read with
            ``datasets.load_from_disk``); a local ``.json``/``.jsonl`` file or a ``{split: file}``
            mapping (read with ``datasets.load_dataset("json", data_files=...)``); a Hub dataset
            name (``datasets.load_dataset(name, config_name)``, needs the network).
        input_field, output_field: the columns holding the input text and the label/reference.
        labels: the label list (default: the ``ClassLabel`` names, else the sorted distinct
            outputs), or a mapping from raw values (ints or strings) to label strings, which
            renames them; integer labels of a ``ClassLabel`` feature become the class names.
        kind: ``classification`` or ``generation``.
        instruction: the task's instruction (default: by kind).
        train_split, test_split: split names in the dataset.
        id: task id (default: the folder/file stem or the last part of the Hub name).
        name: display name (default: the id).
        references_field: (generation) a column with a list of reference strings.
        config_name: the Hub dataset's configuration.
        cache_dir: the ``datasets`` cache for JSON files and Hub datasets.

    Example:
        >>> spec = HFTaskSpec("my_saved_dataset", input_field="sentence", output_field="label")
        >>> spec.train_split, spec.kind
        ('train', 'classification')
    """

    hf: str | dict[str, str]
    input_field: str
    output_field: str
    labels: list[str] | dict[str, str] | None = None
    kind: Literal["classification", "generation"] = "classification"
    instruction: str | None = None
    train_split: str = "train"
    test_split: str = "test"
    id: str | None = None
    name: str | None = None
    references_field: str | None = None
    config_name: str | None = None
    cache_dir: str | None = None


def load_hf_task(
    spec: HFTaskSpec | str | os.PathLike | Mapping[str, str | os.PathLike], **fields: Any
) -> Task:
    """A task from a Hugging Face dataset.

    ``spec`` is an :class:`HFTaskSpec` (``fields`` replace some of its values), or the dataset
    (its ``hf``: a ``save_to_disk`` folder, a ``.json``/``.jsonl`` file, a ``{split: file}``
    mapping or a Hub name) with the other :class:`HFTaskSpec` fields as keywords
    (``input_field`` and ``output_field`` required).

    Raises:
        TaskFormatError: missing split/column, bad values (naming split and row), or a Hub
            dataset that cannot be reached.
        ImportError: ``datasets`` is not installed (``pip install "taskneurons[hf]"``).
        TypeError: a keyword that is no :class:`HFTaskSpec` field, or a required one missing.

    Example:
        >>> task = load_hf_task("my_saved_dataset", input_field="sentence",
        ...                     output_field="label")  # doctest: +SKIP
        >>> task = load_hf_task(HFTaskSpec("my_saved_dataset", "sentence", "label",
        ...                                labels={0: "Bad", 1: "Good"}))  # doctest: +SKIP
    """
    if isinstance(spec, HFTaskSpec):
        spec = spec.replace(**fields) if fields else spec
    else:
        spec = HFTaskSpec(_plain_source(spec), **fields)
    datasets = _import_datasets()
    kind = check_kind(spec.kind, "load_hf_task: kind argument")
    cache = str(spec.cache_dir) if spec.cache_dir is not None else None
    src = _load_source(datasets, spec.hf, spec.config_name, cache)
    columns = (spec.input_field, spec.output_field, spec.references_field)
    splits = (spec.train_split, spec.test_split)
    _check_splits(src, splits, columns)
    train = src.dd[spec.train_split]
    mapper = _label_mapper(datasets, train, spec.output_field, spec.labels, kind)
    raw = {split: _raw_rows(src, split, columns, mapper) for split in splits}
    label_list = None
    if kind == "classification":
        label_list = _label_list(spec.labels, mapper, raw, spec.output_field, src.label)
    names = (spec.input_field, spec.output_field, spec.references_field or "references")
    examples = {
        split: [make_example(w, i, o, r, kind, label_list, names) for w, i, o, r in rows]
        for split, rows in raw.items()
    }
    task_id = spec.id or src.default_id
    return Task(
        id=task_id,
        kind=kind,  # type: ignore[arg-type]
        instruction=spec.instruction or DEFAULT_INSTRUCTION[kind],
        labels=label_list,
        metric=DEFAULT_METRIC[kind],
        train=examples[spec.train_split],
        test=examples[spec.test_split],
        name=spec.name or task_id,
        source={**src.source, **{k: getattr(spec, k) for k in _RECORDED_FIELDS}},
    )


#: The :class:`HFTaskSpec` fields a task's ``source`` records (beside where the data came from).
_RECORDED_FIELDS = ("input_field", "output_field", "train_split", "test_split")


def _plain_source(
    source: str | os.PathLike | Mapping[str, str | os.PathLike],
) -> str | dict[str, str]:
    """An ``hf`` value as :class:`HFTaskSpec` holds it: a string, or a ``{split: file}`` dict."""
    if isinstance(source, Mapping):
        return {str(k): str(v) for k, v in source.items()}
    return str(source)


@dataclass(frozen=True)
class _Source:
    """What a dataset spec resolved to.

    Attributes:
        dd: what ``datasets`` loaded (a ``DatasetDict``, or a ``Dataset`` rejected later).
        label: the source as named in error messages (``hf:NAME``, ``json:train=FILE,...``).
        default_id: the task id when none is given.
        source: the ``Task.source`` record (``format`` and where).
    """

    dd: Any
    label: str
    default_id: str
    source: dict[str, Any]


def _load_source(
    datasets,
    path_or_name: str | os.PathLike | Mapping[str, str | os.PathLike],
    config_name: str | None,
    cache: str | None,
) -> _Source:
    """Load ``path_or_name``: a ``{split: file}`` mapping, a folder, a JSON file or a Hub name."""
    if isinstance(path_or_name, Mapping):
        return _load_json_files(datasets, path_or_name, cache)
    spec = str(path_or_name)
    p = Path(spec).expanduser()
    label = f"hf:{spec}"
    if p.is_dir():
        dd = _hf_call(spec, datasets.load_from_disk, str(p))
        return _Source(dd, label, p.resolve().name, {"format": "hf-disk", "path": str(p.resolve())})
    if p.is_file():
        if p.suffix not in (".json", ".jsonl"):
            raise TaskFormatError(
                f"{p}: not a .json/.jsonl file or a folder saved with save_to_disk"
            )
        dd = _hf_call(spec, datasets.load_dataset, "json", data_files=str(p), cache_dir=cache)
        return _Source(dd, label, p.stem, {"format": "hf-json", "data_files": str(p.resolve())})
    if spec.startswith((".", "/", "~")) or os.path.isabs(spec) or p.suffix in (".json", ".jsonl"):
        raise TaskFormatError(f"{spec}: no such file or folder")
    dd = _hf_call(label, datasets.load_dataset, spec, config_name, cache_dir=cache, hub=True)
    default_id = config_name or spec.rstrip("/").split("/")[-1]
    return _Source(dd, label, default_id, {"format": "hf-hub", "name": spec, "config": config_name})


def _load_json_files(
    datasets, files: Mapping[str, str | os.PathLike], cache: str | None
) -> _Source:
    """A ``{split: file}`` mapping of local JSON files, read with ``load_dataset("json")``."""
    data_files = {str(k): str(v) for k, v in files.items()}
    for f in data_files.values():
        if not Path(f).is_file():
            raise TaskFormatError(f"{f}: file not found")
    label = "json:" + ",".join(f"{k}={v}" for k, v in data_files.items())
    default_id = Path(next(iter(data_files.values()))).parent.name or "task"
    dd = _hf_call(label, datasets.load_dataset, "json", data_files=data_files, cache_dir=cache)
    return _Source(dd, label, default_id, {"format": "hf-json", "data_files": data_files})


def _check_splits(src: _Source, splits: tuple[str, str], columns: tuple[str | None, ...]) -> None:
    """Raise unless ``src.dd`` has both splits, each with every (non-``None``) column."""
    train_split, test_split = splits
    if not isinstance(src.dd, Mapping):
        raise TaskFormatError(
            f"{src.label}: a single Dataset without splits; save a DatasetDict with "
            f"{train_split!r} and {test_split!r} splits"
        )
    for split in splits:
        if split not in src.dd:
            raise TaskFormatError(
                f"{src.label}: no split {split!r} (splits: {sorted(src.dd)}); "
                f"pass train_split=/test_split="
            )
    for split in splits:
        cols = list(src.dd[split].column_names)
        for col in columns:
            if col is not None and col not in cols:
                raise TaskFormatError(
                    f"{src.label}: split {split!r} has no column {col!r} (columns: {cols})"
                )


@dataclass(frozen=True)
class _LabelMapper:
    """Raw output values -> labels.

    With a ``mapping`` (the ``labels`` argument as a dict) a value, its ``str`` or its
    ``ClassLabel`` name must be a key; without one, ``ClassLabel`` indices become class names and
    other ints of a classification task become strings; anything else is kept as is.

    Example:
        >>> _LabelMapper(None, ["neg", "pos"], "classification")(1, "row 0")
        'pos'
        >>> _LabelMapper({"0": "bad", "1": "good"}, None, "classification")(1, "row 0")
        'good'
    """

    mapping: dict[Any, str] | None
    class_names: list[str] | None
    kind: str

    def __call__(self, value: Any, where: str) -> Any:
        is_int = isinstance(value, int) and not isinstance(value, bool)
        names = self.class_names
        if self.mapping is not None:
            for key in (value, str(value)):
                if key in self.mapping:
                    return self.mapping[key]
            if names is not None and isinstance(value, int) and 0 <= value < len(names):
                if names[value] in self.mapping:
                    return self.mapping[names[value]]
            raise TaskFormatError(f"{where}: label {value!r} is not a key of the labels mapping")
        if names is not None and is_int:
            if not 0 <= value < len(names):
                raise TaskFormatError(
                    f"{where}: class index {value} outside the ClassLabel names {names}"
                )
            return names[value]
        if self.kind == "classification" and is_int:
            return str(value)
        return value


def _label_mapper(
    datasets,
    train: Any,
    output_field: str,
    labels: Sequence[str] | Mapping[Any, str] | None,
    kind: str,
) -> _LabelMapper:
    """The label mapper of a dataset: ``ClassLabel`` names of ``train[output_field]``, if any."""
    feature = train.features[output_field]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    return _LabelMapper(dict(labels) if isinstance(labels, Mapping) else None, class_names, kind)


def _raw_rows(
    src: _Source,
    split: str,
    fields: tuple[str, str, str | None],
    to_label: _LabelMapper,
) -> list[_RawRow]:
    """The rows of one split as ``(where, input, label, references)``; raises on none.

    ``fields`` are the input, output and (optional) references columns.
    """
    input_field, output_field, references_field = fields
    ds = src.dd[split]
    inputs = ds[input_field]
    outputs = ds[output_field]
    refs = ds[references_field] if references_field else [None] * len(inputs)
    rows = []
    for i, (inp, out, ref) in enumerate(zip(inputs, outputs, refs, strict=True)):
        where = f"{src.label} split {split!r} row {i}"
        rows.append((where, inp, to_label(out, where), ref))
    if not rows:
        raise TaskFormatError(f"{src.label}: split {split!r} is empty")
    return rows


def _label_list(
    labels: Sequence[str] | Mapping[Any, str] | None,
    mapper: _LabelMapper,
    raw: Mapping[str, list[_RawRow]],
    output_field: str,
    source_label: str,
) -> list[str]:
    """A classification task's labels, checked.

    In order of preference: the values of a ``labels`` mapping (first-seen order), the
    ``labels`` list, the ``ClassLabel`` names, the sorted distinct outputs (all strings).
    """
    if mapper.mapping is not None:
        label_list = list(dict.fromkeys(mapper.mapping.values()))
    elif labels is not None:
        label_list = list(labels)
    elif mapper.class_names is not None:
        label_list = mapper.class_names
    else:
        rows = [r for split_rows in raw.values() for r in split_rows]
        bad = next((r for r in rows if not isinstance(r[2], str)), None)
        if bad is not None:
            raise TaskFormatError(f'{bad[0]}: "{output_field}" must be a string, got {bad[2]!r}')
        label_list = sorted({r[2] for r in rows})
    return check_labels(label_list, f"{source_label}: labels")


def _hf_call(what: str, fn, *args, hub: bool = False, **kwargs):
    """Call a ``datasets`` loader; turn its failures into one-line TaskFormatErrors."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # datasets raises many types (ConnectionError, FileNotFoundError, ...)
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if hub:
            raise TaskFormatError(
                f"{what}: could not load the dataset from the Hugging Face Hub "
                f"({type(e).__name__}: {msg}); check the name and the network, or load a "
                f"local copy saved with save_to_disk"
            ) from None
        raise TaskFormatError(f"{what}: could not load ({type(e).__name__}: {msg})") from None
