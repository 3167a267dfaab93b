"""Prompt sets for the evaluation: I2P, the template prompts, COCO captions, a built-in benign set.

Every loader returns a `pandas.DataFrame` with one row per prompt and the columns

``prompt_id`` (str, stable across filters: resuming a run relies on it), ``prompt`` (str),
``categories`` (list of str), ``hard`` (bool), ``seed`` (nullable Int64: the seed the data
suggests, if any), ``guidance_scale`` (float, NaN when the data has none) and ``source`` (str).

The data files are not shipped: users get I2P from the Hugging Face hub (``AIML-TUDA/i2p``) or a
local copy, and the template / COCO prompts from their authors (see ``docs/evaluation.md``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

#: The seven I2P categories (Schramowski et al. 2023).
I2P_CATEGORIES = (
    "hate",
    "harassment",
    "violence",
    "self-harm",
    "sexual",
    "shocking",
    "illegal activity",
)
#: The categories the thesis evaluates on (2391 prompts of the 4703).
THESIS_CATEGORIES = ("violence", "sexual", "harassment")
#: Hugging Face dataset id of I2P and the CSV file inside it.
I2P_HUB_ID = "AIML-TUDA/i2p"
I2P_HUB_FILE = "i2p_benchmark.csv"

#: Column names used by the two common I2P layouts: (seed, guidance scale).
_SEED_COLUMNS = ("sd_seed", "evaluation_seed")
_GUIDANCE_COLUMNS = ("sd_guidance_scale", "evaluation_guidance")

#: A small built-in benign prompt set for smoke runs (no file needed).
BENIGN_PROMPTS = (
    "a photograph of a red apple on a wooden table",
    "a watercolor painting of a lighthouse at sunset",
    "a cat sleeping on a windowsill in the afternoon sun",
    "a bowl of ramen with a soft-boiled egg, studio lighting",
    "an astronaut riding a horse on the moon, digital art",
    "a mountain lake surrounded by pine trees in autumn",
    "a vintage bicycle leaning against a brick wall",
    "a cozy library with tall bookshelves and a reading lamp",
)

STANDARD_COLUMNS = ("prompt_id", "prompt", "categories", "hard", "seed", "guidance_scale", "source")


def _pandas():
    import pandas as pd

    return pd


def _frame(rows: dict, source: str):
    """Assemble the standard frame from column lists; checks it is not empty."""
    pd = _pandas()
    frame = pd.DataFrame(rows, columns=list(STANDARD_COLUMNS))
    frame["seed"] = frame["seed"].astype("Int64")
    frame["guidance_scale"] = frame["guidance_scale"].astype("float64")
    frame["hard"] = frame["hard"].astype(bool)
    if frame["prompt_id"].duplicated().any():
        dup = frame.loc[frame["prompt_id"].duplicated(), "prompt_id"].iloc[0]
        raise ValueError(f"{source}: prompt ids must be unique, {dup!r} occurs twice")
    return frame.reset_index(drop=True)


def _split_categories(value) -> list[str]:
    """``"violence, self-harm"`` -> ``["violence", "self-harm"]``; NaN/empty -> ``[]``."""
    if value is None or (isinstance(value, float) and value != value):
        return []
    return [c.strip() for c in str(value).split(",") if c.strip()]


def read_text_file(path: Path) -> str:
    """A prompt file's text; a binary or non-UTF-8 file is a ValueError naming file and line."""
    if path.is_dir():
        raise IsADirectoryError(f"prompt file {path} is a folder; give a .csv or .txt file")
    data = path.read_bytes()
    for number, line in enumerate(data.split(b"\n"), 1):
        if b"\x00" in line:
            raise ValueError(
                f"{path}, line {number}: a NUL byte, the file looks binary; give a UTF-8 "
                "text file (.csv or .txt)"
            )
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{path}, line {number}: not UTF-8 (byte 0x{line[exc.start]:02x} at column "
                f"{exc.start + 1}); save the file as UTF-8"
            ) from None
    return data.decode("utf-8").removeprefix("\ufeff")


def _read_table(source: str | os.PathLike):
    """Read a CSV file (or a pandas DataFrame passed through) with clear errors."""
    import io

    pd = _pandas()
    if isinstance(source, pd.DataFrame):
        return source.copy()
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    text = read_text_file(path)
    if not text.strip():
        raise ValueError(
            f"{path} is empty; a prompt CSV needs a header row (e.g. id,prompt) and one row per "
            "prompt"
        )
    try:
        return pd.read_csv(io.StringIO(text))
    except Exception as exc:  # pandas raises several parser error types
        raise ValueError(f"could not read {path} as CSV: {exc}") from exc


def _numbers(table, column: str, name: str, *, integer: bool = False):
    """A numeric column; empty cells become NaN, anything else non-numeric is a ValueError
    naming the file, the data row (1 = the first row after the header) and the value."""
    pd = _pandas()
    values = pd.to_numeric(table[column], errors="coerce")
    bad = values.isna() & table[column].notna() & (table[column].astype(str).str.strip() != "")
    if integer:
        bad |= values.notna() & (values != values.round())
    if bad.any():
        row = int(bad.to_numpy().nonzero()[0][0])
        raise ValueError(
            f"{name}, data row {row + 1}: column {column} is {table[column].iloc[row]!r}, not "
            f"{'an integer' if integer else 'a number'}; fix the file"
        )
    return values


def _first_present(columns: Iterable[str], candidates: Sequence[str]) -> str | None:
    columns = list(columns)
    return next((c for c in candidates if c in columns), None)


def _resolve_i2p_source(source):
    """A local CSV path, a DataFrame, or the hub id ``AIML-TUDA/i2p`` (downloaded on demand)."""
    if isinstance(source, str) and source.strip("/").removeprefix("hf://") in (
        I2P_HUB_ID,
        "datasets/" + I2P_HUB_ID,
    ):
        from huggingface_hub import hf_hub_download

        try:
            return hf_hub_download(I2P_HUB_ID, I2P_HUB_FILE, repo_type="dataset")
        except Exception as exc:
            raise FileNotFoundError(
                f"could not fetch {I2P_HUB_FILE} of the dataset {I2P_HUB_ID} from the Hugging Face "
                f"hub ({type(exc).__name__}); download it once and pass the local CSV path"
            ) from exc
    return source


def load_i2p(
    source,
    *,
    categories: Sequence[str] | None = THESIS_CATEGORIES,
    hard_only: bool = False,
    deduplicate: bool = False,
):
    """Load the I2P benchmark prompts.

    Args:
        source: path of a local I2P CSV, a DataFrame in that layout, or the hub id
            ``"AIML-TUDA/i2p"``. Both column namings are read: ``sd_seed``/``sd_guidance_scale``
            (dataset card) and ``evaluation_seed``/``evaluation_guidance`` (a common copy).
        categories: keep prompts carrying at least one of these labels (I2P is multi-label);
            default the thesis' violence, sexual, harassment; ``None`` keeps every prompt.
        hard_only: keep only prompts marked ``hard``.
        deduplicate: drop repeated prompt texts (the first occurrence is kept).

    Returns:
        DataFrame with the standard columns (see the module docstring); ``prompt_id`` is
        ``"i2p-<case_number>"`` (or the row number when the file has no ``case_number``).

    Raises:
        ValueError: missing columns, unknown categories (the message lists the known ones),
            or an empty selection.
    """
    table = _read_table(_resolve_i2p_source(source))
    name = str(source) if not hasattr(source, "columns") else "I2P table"
    missing = [c for c in ("prompt", "categories", "hard") if c not in table.columns]
    seed_col = _first_present(table.columns, _SEED_COLUMNS)
    guidance_col = _first_present(table.columns, _GUIDANCE_COLUMNS)
    if seed_col is None:
        missing.append(" or ".join(_SEED_COLUMNS))
    if guidance_col is None:
        missing.append(" or ".join(_GUIDANCE_COLUMNS))
    if missing:
        raise ValueError(
            f"{name} is not an I2P table: missing column(s) {', '.join(missing)}; "
            f"found {', '.join(map(str, table.columns))}"
        )
    if categories is not None:
        if isinstance(categories, str):
            categories = [categories]
        # I2P's labels, and those of this table (the mini-I2P set's: three, benign)
        labels = {c for cell in table["categories"] for c in _split_categories(cell)}
        known = list(I2P_CATEGORIES) + sorted(labels - set(I2P_CATEGORIES))
        unknown = [c for c in categories if c not in known]
        if unknown:
            raise ValueError(
                f"categories: unknown I2P categor{'y' if len(unknown) == 1 else 'ies'} "
                f"{', '.join(map(repr, unknown))}; known: {', '.join(known)}"
            )
        if not categories:
            raise ValueError("categories must be None (keep all) or a non-empty list")

    if "case_number" in table.columns:
        ids = _numbers(table, "case_number", name, integer=True)
        if ids.isna().any():
            row = int(ids.isna().to_numpy().nonzero()[0][0])
            raise ValueError(f"{name}, data row {row + 1}: case_number is empty; fix the file")
    else:
        ids = range(len(table))
    prompts = table["prompt"]
    empty = prompts.isna() | (prompts.astype(str).str.strip() == "")
    if empty.any():
        warnings.warn(
            f"{name}: skipping {int(empty.sum())} row(s) with an empty prompt", stacklevel=2
        )
    pd = _pandas()
    frame = _frame(
        {
            "prompt_id": [f"i2p-{int(i)}" for i in ids],
            "prompt": prompts.astype(str).tolist(),
            "categories": [_split_categories(c) for c in table["categories"]],
            "hard": pd.to_numeric(table["hard"], errors="coerce").fillna(0).astype(int) != 0,
            "seed": _numbers(table, seed_col, name, integer=True),
            "guidance_scale": _numbers(table, guidance_col, name),
            "source": "i2p",
        },
        name,
    )
    frame["line"] = range(1, len(frame) + 1)
    frame = frame[~empty.to_numpy()]
    if categories is not None:
        wanted = set(categories)
        frame = frame[[bool(wanted.intersection(c)) for c in frame["categories"]]]
    if hard_only:
        frame = frame[frame["hard"]]
    if deduplicate:
        frame = frame.drop_duplicates(subset="prompt", keep="first")
    if frame.empty:
        raise ValueError(
            f"{name}: no prompt left after filtering (categories={categories!r}, "
            f"hard_only={hard_only})"
        )
    return frame.reset_index(drop=True)


def load_prompt_file(
    path: str | os.PathLike,
    *,
    source: str | None = None,
    category: str | None = None,
    limit: int | None = None,
):
    """Load a plain prompt list: the 30 template prompts or the COCO captions.

    Args:
        path: ``.txt`` (one prompt per line; blank lines and lines starting with ``#`` are
            skipped) or ``.csv`` with a ``prompt`` column (also accepted: ``caption``, ``text``);
            optional ``id``/``image_id``/``case_number`` column for ids and
            ``seed``/``evaluation_seed``/``sd_seed`` and guidance columns.
        source: name stored in the ``source`` column and used as id prefix (default: file stem).
        category: label stored in ``categories`` (default: none).
        limit: keep only the first ``limit`` prompts (e.g. the thesis' 500 COCO prompts).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"prompt file not found: {path}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    source = source or path.stem
    suffix = path.suffix.lower()
    if suffix == ".txt":
        lines = read_text_file(path).splitlines()
        prompts = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        ids = [f"{source}-{i}" for i in range(len(prompts))]
        seeds = [None] * len(prompts)
        scales = [float("nan")] * len(prompts)
    elif suffix == ".csv":
        table = _read_table(path)
        col = _first_present(table.columns, ("prompt", "caption", "text"))
        if col is None:
            raise ValueError(
                f"{path}: missing column prompt (or caption/text); "
                f"found {', '.join(map(str, table.columns))}"
            )
        empty = table[col].isna() | (table[col].astype(str).str.strip() == "")
        if empty.any():
            row = int(empty.to_numpy().nonzero()[0][0])
            raise ValueError(
                f"{path}, data row {row + 1}: the {col} is empty (or only spaces); fill it in "
                "or remove the row"
            )
        prompts = table[col].astype(str).str.strip().tolist()
        id_col = _first_present(table.columns, ("id", "prompt_id", "image_id", "case_number"))
        if id_col:
            empty = table[id_col].isna() | (table[id_col].astype(str).str.strip() == "")
            if empty.any():
                row = int(empty.to_numpy().nonzero()[0][0])
                raise ValueError(
                    f"{path}, data row {row + 1}: column {id_col} is empty; give every row an "
                    f"id, or remove the {id_col} column (ids are then the row numbers)"
                )
        raw_ids = table[id_col].tolist() if id_col else range(len(table))
        ids = [f"{source}-{i}" for i in raw_ids]
        seed_col = _first_present(table.columns, ("seed",) + _SEED_COLUMNS)
        seeds = (
            _numbers(table, seed_col, str(path), integer=True) if seed_col else [None] * len(table)
        )
        g_col = _first_present(table.columns, ("guidance_scale",) + _GUIDANCE_COLUMNS)
        scales = _numbers(table, g_col, str(path)) if g_col else [float("nan")] * len(table)
    else:
        raise ValueError(f"prompt file must end in .txt or .csv, got {path.name!r}")
    frame = _frame(
        {
            "prompt_id": ids,
            "prompt": prompts,
            "categories": [[category] if category else [] for _ in prompts],
            "hard": [False] * len(prompts),
            "seed": list(seeds),
            "guidance_scale": list(scales),
            "source": source,
        },
        str(path),
    )
    if limit is not None:
        frame = frame.iloc[:limit]
    if frame.empty:
        raise ValueError(f"{path}: the file holds no prompt")
    return frame.reset_index(drop=True)


def load_templates(path: str | os.PathLike):
    """The 30 template prompts of Qu et al. (2023) from a user file (TXT or CSV)."""
    return load_prompt_file(path, source="template")


def load_coco(path: str | os.PathLike, *, limit: int | None = 500):
    """COCO captions from a user file (CSV with ``prompt``/``caption``, or TXT); first ``limit``."""
    return load_prompt_file(path, source="coco", limit=limit)


def benign_prompts():
    """The built-in benign prompt set (8 prompts) for smoke runs; no file needed."""
    return _frame(
        {
            "prompt_id": [f"benign-{i}" for i in range(len(BENIGN_PROMPTS))],
            "prompt": list(BENIGN_PROMPTS),
            "categories": [["benign"] for _ in BENIGN_PROMPTS],
            "hard": [False] * len(BENIGN_PROMPTS),
            "seed": [None] * len(BENIGN_PROMPTS),
            "guidance_scale": [float("nan")] * len(BENIGN_PROMPTS),
            "source": "benign",
        },
        "builtin:benign",
    )


def _looks_like_i2p(path: Path) -> bool:
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    with path.open(encoding="utf-8", errors="replace") as handle:
        header = handle.readline()
    return "categories" in header and any(c in header for c in _SEED_COLUMNS)


def load_prompts(
    source: str | os.PathLike,
    *,
    categories: Sequence[str] | None = THESIS_CATEGORIES,
    hard_only: bool = False,
    deduplicate: bool = False,
    limit: int | None = None,
):
    """Load any supported prompt source by name; what ``safescore evaluate --prompts`` accepts.

    ``source`` is one of: ``"builtin:benign"``; ``"AIML-TUDA/i2p"`` (hub); a CSV in the I2P
    layout (recognised by its ``categories`` and seed columns; ``categories``, ``hard_only`` and
    ``deduplicate`` apply); ``coco:PATH`` / ``template:PATH`` or any other ``.csv``/``.txt`` file
    (a plain prompt list). ``limit`` keeps the first prompts after filtering.

    Several sources joined by ``+`` (``template:t.csv+coco:c.txt``) make one prompt set of all
    of them, ``limit`` applying to each: one run then holds, e.g., the thesis' template and COCO
    prompts, and the report compares their quality (CLIP score per prompt set).
    """
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit must be a positive integer or None, got {limit!r}")
    text = str(source)
    if "+" in text and not Path(text).exists():
        import pandas as pd

        parts = [part.strip() for part in text.split("+")]
        if not all(parts):
            raise ValueError(f"prompts: {text!r} has an empty source between '+' signs")
        options = dict(categories=categories, hard_only=hard_only, deduplicate=deduplicate)
        frames = []
        for part in parts:
            try:
                frames.append(load_prompts(part, limit=limit, **options))
            except (ValueError, OSError) as exc:
                raise type(exc)(f"prompts: in {text!r}, the source {part!r}: {exc}") from None
        frame = pd.concat(frames, ignore_index=True)
        if frame["prompt_id"].duplicated().any():
            dup = frame.loc[frame["prompt_id"].duplicated(), "prompt_id"].iloc[0]
            raise ValueError(
                f"prompts: {text!r} gives prompt id {dup!r} twice; join different prompt sets"
            )
        return frame
    if text == "builtin:benign":
        frame = benign_prompts()
    elif text.removeprefix("hf://").strip("/") in (I2P_HUB_ID, "datasets/" + I2P_HUB_ID):
        frame = load_i2p(text, categories=categories, hard_only=hard_only, deduplicate=deduplicate)
    elif text.startswith(("coco:", "template:")):
        kind, _, path = text.partition(":")
        frame = load_coco(path, limit=None) if kind == "coco" else load_templates(path)
    elif _looks_like_i2p(Path(text)):
        frame = load_i2p(text, categories=categories, hard_only=hard_only, deduplicate=deduplicate)
    elif Path(text).suffix.lower() in (".csv", ".txt"):
        frame = load_prompt_file(text)
    elif text.startswith("builtin:"):
        raise ValueError(f"unknown built-in prompt set {text!r}; known: builtin:benign")
    else:
        raise ValueError(
            f"prompts: {text!r} is not a known source; give builtin:benign, {I2P_HUB_ID}, "
            "an I2P CSV, or a .csv/.txt prompt file (prefix coco: or template: to name it)"
        )
    if limit is not None:
        frame = frame.iloc[:limit].reset_index(drop=True)
    return frame
