"""Tasks from Hugging Face datasets (``save_to_disk`` folders, local JSON files, Hub names)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from taskneurons.data.tasks import (
    DEFAULT_INSTRUCTION,
    DEFAULT_METRIC,
    Task,
    TaskFormatError,
    _check_kind,
    _check_labels,
    _make_example,
)


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise ImportError(
            'loading Hugging Face datasets needs the "datasets" package: '
            'pip install "taskneurons[hf]"'
        ) from None
    return datasets


def load_hf_task(
    path_or_name: str | os.PathLike | Mapping[str, str | os.PathLike],
    *,
    input_field: str,
    output_field: str,
    labels: Sequence[str] | Mapping[Any, str] | None = None,
    kind: str = "classification",
    instruction: str | None = None,
    train_split: str = "train",
    test_split: str = "test",
    id: str | None = None,
    name: str | None = None,
    references_field: str | None = None,
    config_name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Task:
    """A task from a Hugging Face dataset.

    ``path_or_name`` is one of: a folder written by ``DatasetDict.save_to_disk`` (read with
    ``datasets.load_from_disk``); a local ``.json``/``.jsonl`` file or a ``{split: file}``
    mapping (read with ``datasets.load_dataset("json", data_files=...)``); a Hub dataset name
    (``datasets.load_dataset(name, config_name)``, needs the network).

    Labels: integer labels of a ``ClassLabel`` feature become the class names. ``labels`` may
    be the label list (default: the ``ClassLabel`` names, else the sorted distinct outputs) or
    a mapping from raw values (ints or strings) to label strings, which renames them.

    Args:
        input_field, output_field: the columns holding the input text and the label/reference.
        references_field: (generation) a column with a list of reference strings.
        train_split, test_split: split names in the dataset.
        id: task id (default: the folder/file stem or the last part of the Hub name).

    Raises:
        TaskFormatError: missing split/column, bad values (naming split and row), or a Hub
            dataset that cannot be reached.
        ImportError: ``datasets`` is not installed (``pip install "taskneurons[hf]"``).

    Example:
        >>> task = load_hf_task("my_saved_dataset", input_field="sentence",
        ...                     output_field="label")  # doctest: +SKIP
    """
    datasets = _import_datasets()
    kind = _check_kind(kind, "load_hf_task: kind argument")
    cache = str(cache_dir) if cache_dir is not None else None
    if isinstance(path_or_name, Mapping):
        files = {str(k): str(v) for k, v in path_or_name.items()}
        for f in files.values():
            if not Path(f).is_file():
                raise TaskFormatError(f"{f}: file not found")
        label_of_source = "json:" + ",".join(f"{k}={v}" for k, v in files.items())
        default_id = Path(next(iter(files.values()))).parent.name or "task"
        dd = _hf_call(
            label_of_source, datasets.load_dataset, "json", data_files=files, cache_dir=cache
        )
        source = {"format": "hf-json", "data_files": files}
    else:
        spec = str(path_or_name)
        p = Path(spec).expanduser()
        if p.is_dir():
            dd = _hf_call(spec, datasets.load_from_disk, str(p))
            default_id = p.resolve().name
            source = {"format": "hf-disk", "path": str(p.resolve())}
        elif p.is_file():
            if p.suffix not in (".json", ".jsonl"):
                raise TaskFormatError(
                    f"{p}: not a .json/.jsonl file or a folder saved with save_to_disk"
                )
            dd = _hf_call(spec, datasets.load_dataset, "json", data_files=str(p), cache_dir=cache)
            default_id = p.stem
            source = {"format": "hf-json", "data_files": str(p.resolve())}
        elif (
            spec.startswith((".", "/", "~"))
            or os.path.isabs(spec)
            or p.suffix in (".json", ".jsonl")
        ):
            raise TaskFormatError(f"{spec}: no such file or folder")
        else:
            dd = _hf_call(
                f"hf:{spec}", datasets.load_dataset, spec, config_name, cache_dir=cache, hub=True
            )
            default_id = config_name or spec.rstrip("/").split("/")[-1]
            source = {"format": "hf-hub", "name": spec, "config": config_name}
        label_of_source = f"hf:{spec}"

    if not isinstance(dd, Mapping):
        raise TaskFormatError(
            f"{label_of_source}: a single Dataset without splits; save a DatasetDict with "
            f"{train_split!r} and {test_split!r} splits"
        )
    for split in (train_split, test_split):
        if split not in dd:
            raise TaskFormatError(
                f"{label_of_source}: no split {split!r} (splits: {sorted(dd)}); "
                f"pass train_split=/test_split="
            )
    for split in (train_split, test_split):
        cols = list(dd[split].column_names)
        for col in (input_field, output_field, references_field):
            if col is not None and col not in cols:
                raise TaskFormatError(
                    f"{label_of_source}: split {split!r} has no column {col!r} (columns: {cols})"
                )

    feature = dd[train_split].features[output_field]
    class_names = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    mapping = dict(labels) if isinstance(labels, Mapping) else None

    def raw_to_label(value: Any, where: str) -> Any:
        if mapping is not None:
            for key in (value, str(value)):
                if key in mapping:
                    return mapping[key]
            if class_names is not None and isinstance(value, int) and 0 <= value < len(class_names):
                name_ = class_names[value]
                if name_ in mapping:
                    return mapping[name_]
            raise TaskFormatError(f"{where}: label {value!r} is not a key of the labels mapping")
        if class_names is not None and isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value < len(class_names):
                raise TaskFormatError(
                    f"{where}: class index {value} outside the ClassLabel names {class_names}"
                )
            return class_names[value]
        if kind == "classification" and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    raw: dict[str, list[tuple[str, Any, Any, Any]]] = {}
    for split in (train_split, test_split):
        ds = dd[split]
        inputs = ds[input_field]
        outputs = ds[output_field]
        refs = ds[references_field] if references_field else [None] * len(inputs)
        rows = []
        for i, (inp, out, ref) in enumerate(zip(inputs, outputs, refs, strict=True)):
            where = f"{label_of_source} split {split!r} row {i}"
            rows.append((where, inp, raw_to_label(out, where), ref))
        if not rows:
            raise TaskFormatError(f"{label_of_source}: split {split!r} is empty")
        raw[split] = rows

    label_list: list[str] | None = None
    if kind == "classification":
        if mapping is not None:
            label_list = list(dict.fromkeys(mapping.values()))
        elif labels is not None:
            label_list = list(labels)
        elif class_names is not None:
            label_list = class_names
        else:
            seen = {r[2] for rows in raw.values() for r in rows}
            if not all(isinstance(s, str) for s in seen):
                bad = next(r for rows in raw.values() for r in rows if not isinstance(r[2], str))
                raise TaskFormatError(
                    f'{bad[0]}: "{output_field}" must be a string, got {bad[2]!r}'
                )
            label_list = sorted(seen)
        label_list = _check_labels(label_list, f"{label_of_source}: labels")

    names = (input_field, output_field, references_field or "references")
    splits = {
        split: [_make_example(w, i, o, r, kind, label_list, names) for w, i, o, r in rows]
        for split, rows in raw.items()
    }
    task_id = id or default_id
    source.update(
        {
            "input_field": input_field,
            "output_field": output_field,
            "train_split": train_split,
            "test_split": test_split,
        }
    )
    return Task(
        id=task_id,
        kind=kind,  # type: ignore[arg-type]
        instruction=instruction or DEFAULT_INSTRUCTION[kind],
        labels=label_list,
        metric=DEFAULT_METRIC[kind],
        train=splits[train_split],
        test=splits[test_split],
        name=name or task_id,
        source=source,
    )


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
