"""Read preference, prompt and demonstration files into validated records; every error names file:line:field.

Formats, chosen by the path: `.jsonl` or `.json` (JSON Lines, one object per line), `.csv`, `.parquet`, or a
folder written by `datasets.Dataset.save_to_disk` (a `DatasetDict` folder uses its "train" split).

The `line` in errors and in `source` means:
  JSON Lines  the physical line (1-based; blank lines are skipped but counted).
  CSV         the line the row starts on, the header being line 1, so the first data row is line 2.
              A quoted cell may span lines; the next row's number counts them.
  Parquet, datasets folder   the row: the 1-based row index, "row N".

A text field holds a string or a conversation: a list of `{"role", "content"}` messages with role in
system/user/assistant (TRL's conversational format). A conversational `chosen`, `rejected` or `response` must
end with an assistant message, whose content is the response. If the prompt field is absent and the responses
are conversations, the prompt is the turns before their final assistant message (TRL's "implicit prompt").
If it is absent and they are text holding whole conversations (Anthropic HH:
`\\n\\nHuman: ...\\n\\nAssistant: ...`), the prompt is their shared prefix up to and including its last
`\\n\\nAssistant:`, the responses the remainders, and a prompt made of HH turns becomes chat messages, so the
chat template applies.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rlhfkit.errors import DataError

logger = logging.getLogger(__name__)

Message = dict  # {"role": str, "content": str}
Prompt = str | tuple[Message, ...]  # plain text, or chat messages (a tuple, so records stay immutable)

ROLES = ("system", "user", "assistant")
FORMATS = ".jsonl, .json (JSON Lines), .csv, .parquet, or a datasets.save_to_disk folder"
SAME_RESPONSES = "chosen == rejected"


@dataclass(frozen=True)
class PreferencePair:
    """One comparison: the prompt, the preferred and the dispreferred response."""

    prompt: Prompt
    chosen: str  # response text only (the assistant's content)
    rejected: str
    margin: float | None = None
    source: str = ""  # "file:line", for messages


@dataclass(frozen=True)
class Demonstration:
    """One SFT example: the prompt and the response to imitate."""

    prompt: Prompt
    response: str
    source: str = ""  # "file:line"


@dataclass
class LoadReport:
    """What a loader read and what it left out, by reason."""

    path: str
    rows_read: int
    kept: int
    skipped: dict[str, int]  # reason -> count, e.g. {"chosen == rejected": 3}

    def summary(self) -> str:
        """One line, e.g. `prefs.jsonl: 200 rows read, 197 kept, 3 skipped (chosen == rejected: 3)`."""
        reasons = ", ".join(f"{reason}: {count}" for reason, count in self.skipped.items())
        n_skipped = sum(self.skipped.values())
        text = f"{self.path}: {self.rows_read} rows read, {self.kept} kept, {n_skipped} skipped"
        return f"{text} ({reasons})" if reasons else text


@dataclass(frozen=True)
class PreferenceFields:
    """The column names holding each part of a preference pair; `margin=None` means no margin column."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    margin: str | None = None


# ---------------------------------------------------------------------------------------------------------
# Rows: one generator per format, each yielding (line, raw row).


def read_rows(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Raw rows of a data file, without validating their fields.

    Args:
        path: a `.jsonl`/`.json`, `.csv` or `.parquet` file, or a `datasets.save_to_disk` folder.
    Returns:
        An iterator of (line, row): `line` as in the module docstring, `row` a dict of column -> value.
    Raises:
        DataError: the file is missing or of an unknown type; while iterating, it is empty or malformed.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, None, "file not found")
    if path.is_dir():
        return _require_rows(path, _read_dataset_folder(path))
    read = _READERS.get(path.suffix.lower())
    if read is None:
        raise DataError(path, None, None, f"unsupported file type '{path.suffix}'; use {FORMATS}")
    return _require_rows(path, read(path))


def _require_rows(path: Path, rows: Iterator[tuple[int, dict]]) -> Iterator[tuple[int, dict]]:
    is_empty = True
    for line, row in rows:
        is_empty = False
        yield line, row
    if is_empty:
        raise DataError(path, None, None, "file is empty: it has no rows; check the path or the export")


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as file:
        for line, raw in enumerate(file, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8-sig").rstrip())  # column numbers stay on this line
            except UnicodeDecodeError as e:
                raise DataError(path, line, None, f"not valid UTF-8 ({e.reason}); save it as UTF-8") from e
            except json.JSONDecodeError as e:
                raise DataError(path, line, None, f"malformed JSON: {e.msg} (column {e.colno})") from e
            except RecursionError as e:  # json's parser recurses once per level of nesting
                raise DataError(path, line, None, "malformed JSON: nested too deeply to parse") from e
            except ValueError as e:  # e.g. an integer over Python's 4300-digit limit
                raise DataError(path, line, None, f"malformed JSON: {_one_line(str(e).split(':')[0])}") from e
            if not isinstance(row, dict):
                hint = f"expected a JSON object, got {_kind(row)}; JSON Lines holds one object per line"
                raise DataError(path, line, None, hint)
            yield line, row


def _read_csv(path: Path) -> Iterator[tuple[int, dict]]:
    import pandas as pd  # here, so that reading JSON Lines does not pay for importing pandas

    starts, records = _csv_records(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, on_bad_lines="error")
    except pd.errors.EmptyDataError:
        return  # not even a header: _require_rows reports the empty file
    except pd.errors.ParserError as e:
        # pandas counts records, not lines (blank lines count, a cell's newlines don't): "line 1" or "row 0"
        # is the header. starts[] turns that into the physical line.
        message = str(e).split("C error: ")[-1].strip()
        match = re.search(r" (?:in|at|starting at) (line|row) (\d+)", message)
        line = None
        if match:
            index = int(match.group(2)) - (match.group(1) == "line")
            line = starts[index] if index < len(starts) else index + 1
            message = message.replace(match.group(0), "")
        hint = f"malformed CSV: {message}; quote cells holding commas or newlines"
        raise DataError(path, line, None, hint) from e
    except UnicodeDecodeError as e:
        raise DataError(path, None, None, f"not valid UTF-8 ({e.reason}); save the file as UTF-8") from e
    data = [(start, record) for start, record in zip(starts, records) if not _is_blank_record(record)][1:]
    for start, record in data:  # pandas pads short rows and takes a long first row's extra cell as the index
        if len(record) != len(frame.columns):
            n_columns = len(frame.columns)
            hint = (
                f"has {len(record)} cells but the header has {n_columns} columns; quote cells holding commas"
            )
            raise DataError(path, start, None, hint)
    # our line numbers come from the csv module; if it parsed differently, fall back to header + row index
    lines = [start for start, _ in data] if len(data) == len(frame) else range(2, len(frame) + 2)
    yield from zip(lines, frame.to_dict("records"))


def _csv_records(path: Path) -> tuple[list[int], list[list[str]]]:
    """Every record the csv module sees (blank lines too) and the physical line it starts on."""
    starts, records, next_start = [], [], 1
    old_limit = csv.field_size_limit(max(csv.field_size_limit(), path.stat().st_size))  # long responses
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:
            reader = csv.reader(file)
            for record in reader:
                starts.append(next_start)
                records.append(record)
                next_start = reader.line_num + 1
    except (csv.Error, UnicodeDecodeError):
        pass  # pandas reports the problem, or the fallback line numbers are used
    finally:
        csv.field_size_limit(old_limit)
    return starts, records


def _is_blank_record(record: list[str]) -> bool:
    return len(record) <= 1 and not "".join(record).strip()  # pandas skips empty and whitespace-only lines


def _read_parquet(path: Path) -> Iterator[tuple[int, dict]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(path, None, None, f"cannot read Parquet ({e}); check the file is complete") from e
    row_number = 0
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            row_number += 1
            yield row_number, row


def _read_dataset_folder(path: Path) -> Iterator[tuple[int, dict]]:
    import datasets  # slow to import, so only when a folder is read

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        hint = "is a folder but not one written by datasets' save_to_disk; pass such a folder or a data file"
        raise DataError(path, None, None, hint) from e
    if isinstance(dataset, datasets.DatasetDict):
        if "train" not in dataset:
            splits = ", ".join(dataset)
            example = path / next(iter(dataset))
            hint = f"has splits {splits} but none named 'train'; pass one split's folder, e.g. {example}"
            raise DataError(path, None, None, hint)
        dataset = dataset["train"]
    yield from enumerate(dataset, start=1)


_READERS = {".jsonl": _read_jsonl, ".json": _read_jsonl, ".csv": _read_csv, ".parquet": _read_parquet}


# ---------------------------------------------------------------------------------------------------------
# Fields: each check raises a DataError naming file, line and field.


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _one_line(text: str) -> str:
    """`text` as printed in a one-line error: line breaks and other unprintable characters escaped."""
    return text if text.isprintable() else repr(text)[1:-1]


def _is_empty(value: object) -> bool:
    """None, NaN (how pandas and Arrow hand over a missing cell) or a whitespace-only string."""
    return (
        value is None
        or (isinstance(value, float) and math.isnan(value))
        or (isinstance(value, str) and not value.strip())
    )


def _get(row: dict, name: str, path: Path, line: int) -> object:
    """The value of a required field."""
    if name not in row:
        keys = ", ".join(_one_line(str(key)) for key in row) or "none"
        hint = f"is missing (the row has: {keys}); add it, or pass your column's name to the loader"
        raise DataError(path, line, name, hint)
    value = row[name]
    if _is_empty(value):
        raise DataError(path, line, name, "is empty; fill it in or remove the row")
    return value


def _text(value: str, path: Path, line: int, name: str) -> str:
    """A string that is valid Unicode: JSON's "\\ud800" escapes can leave a lone surrogate, which no tokenizer
    or UTF-8 writer accepts."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        hint = f"holds a lone surrogate ({value[e.start]!r} at character {e.start}): not valid Unicode text"
        raise DataError(path, line, name, hint) from e
    return value


def _is_conversation(value: object) -> bool:
    return isinstance(value, (list, tuple))


def _messages(value: list, path: Path, line: int, name: str) -> tuple[Message, ...]:
    """A checked conversation: each message a dict with a known string `role` and a string `content`."""
    if not value:
        raise DataError(
            path, line, name, "is an empty message list; give at least one {role, content} message"
        )
    messages = []
    for index, message in enumerate(value):
        where = f"{name}[{index}]"
        if not isinstance(message, dict):
            raise DataError(path, line, where, f"must be a {{role, content}} message, got {_kind(message)}")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or role not in ROLES:
            raise DataError(path, line, f"{where}.role", f"must be one of {', '.join(ROLES)}; got {role!r}")
        if not isinstance(content, str):
            raise DataError(path, line, f"{where}.content", f"must be a string, got {_kind(content)}")
        messages.append({"role": role, "content": _text(content, path, line, f"{where}.content")})
    return tuple(messages)


def _prompt(value: object, path: Path, line: int, name: str) -> Prompt:
    if isinstance(value, str):
        return _text(value, path, line, name)
    if _is_conversation(value):
        return _messages(value, path, line, name)
    hint = f"must be a string or a list of {{role, content}} messages, got {_kind(value)}"
    raise DataError(path, line, name, hint)


def _response(value: object, path: Path, line: int, name: str) -> str:
    """Response text: the string itself, or the content of a conversation's final assistant message."""
    if isinstance(value, str):
        return _text(value, path, line, name)
    if not _is_conversation(value):
        hint = f"must be a string or a list of {{role, content}} messages, got {_kind(value)}"
        raise DataError(path, line, name, hint)
    messages = _messages(value, path, line, name)
    last = f"{name}[{len(messages) - 1}]"
    if messages[-1]["role"] != "assistant":
        role = messages[-1]["role"]
        hint = f"must be 'assistant': a conversational response ends with the reply; got {role!r}"
        raise DataError(path, line, f"{last}.role", hint)
    if not messages[-1]["content"].strip():
        raise DataError(
            path, line, f"{last}.content", "is empty; the final assistant message is the response"
        )
    return messages[-1]["content"]


def _implicit_prompt(
    conversations: dict[str, object], path: Path, line: int, name: str
) -> tuple[Message, ...]:
    """TRL's implicit prompt: the turns before the final assistant message, shared by every conversation."""
    prefixes = [_messages(value, path, line, field)[:-1] for field, value in conversations.items()]
    fields = " and ".join(f"'{field}'" for field in conversations)
    if not prefixes[0]:
        hint = (
            f"is missing and {fields} hold no turns before the final assistant message; add a '{name}' field"
        )
        raise DataError(path, line, name, hint)
    if any(prefix != prefixes[0] for prefix in prefixes[1:]):
        hint = f"is missing and {fields} differ before their final assistant message; add a '{name}' field"
        raise DataError(path, line, name, hint)
    return prefixes[0]


HH_ASSISTANT = "\n\nAssistant:"  # Anthropic HH's turn markers (hh-rlhf holds whole conversations)
HH_TURN = re.compile(r"\n\n(Human|Assistant):")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _shared_text_prompt(
    responses: dict[str, str], path: Path, line: int, name: str
) -> tuple[Prompt, list[str]]:
    """Anthropic HH rows, read as TRL reads hh-rlhf: the prompt is the shared prefix of the texts up to and
    including its last '\\n\\nAssistant:', the responses are the remainders (stripped).
    Returns: (prompt, [response per field])."""
    texts = {field: _text(value, path, line, field) for field, value in responses.items()}
    fields = " and ".join(f"'{field}'" for field in texts)
    end = os.path.commonprefix(list(texts.values())).rfind(HH_ASSISTANT)
    if end < 0:
        hint = (f"is missing and {fields} share no prefix ending in '\\n\\nAssistant:' "
                f"(Anthropic HH format); add a '{name}' field")
        raise DataError(path, line, name, hint)
    end += len(HH_ASSISTANT)
    remainders = [text[end:].strip() for text in texts.values()]
    for field, remainder in zip(texts, remainders):
        if not remainder:
            hint = "holds no response after the last '\\n\\nAssistant:' of the prompt"
            raise DataError(path, line, field, hint)
    return _hh_messages(texts[next(iter(texts))][:end]), remainders


def _hh_messages(prompt: str) -> Prompt:
    """An HH prompt ('\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:') as chat messages
    (user a, assistant b, user c; the final, empty assistant turn is the generation prompt); text before the
    first marker means another format: the prompt stays text."""
    parts = HH_TURN.split(prompt)  # [before, role, content, role, content, ..., "Assistant", ""]
    if parts[0].strip():
        return prompt
    turns = zip(parts[1::2], parts[2::2])
    messages = tuple({"role": HH_ROLES[role], "content": content.strip()} for role, content in turns)
    return messages[:-1] or prompt


def _margin(value: object, path: Path, line: int, name: str) -> float:
    if isinstance(value, str) and path.suffix.lower() == ".csv":  # CSV cells are all text
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(path, line, name, f"must be a finite number, got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------------------
# Loaders: rows -> records + a LoadReport.


def _preference_pair(row: dict, fields: PreferenceFields, path: Path, line: int) -> PreferencePair:
    responses = {fields.chosen: _get(row, fields.chosen, path, line)}
    responses[fields.rejected] = _get(row, fields.rejected, path, line)
    if fields.prompt not in row and all(isinstance(value, str) for value in responses.values()):
        prompt, (chosen, rejected) = _shared_text_prompt(responses, path, line, fields.prompt)
    else:
        if fields.prompt not in row and all(map(_is_conversation, responses.values())):
            prompt = _implicit_prompt(responses, path, line, fields.prompt)
        else:
            prompt = _prompt(_get(row, fields.prompt, path, line), path, line, fields.prompt)
        chosen = _response(responses[fields.chosen], path, line, fields.chosen)
        rejected = _response(responses[fields.rejected], path, line, fields.rejected)
    margin = None
    if fields.margin is not None:
        margin = _margin(_get(row, fields.margin, path, line), path, line, fields.margin)
    return PreferencePair(prompt, chosen, rejected, margin, source=f"{path}:{line}")


def load_preferences(
    path: str | Path, fields: PreferenceFields = PreferenceFields()
) -> tuple[list[PreferencePair], LoadReport]:
    """Preference pairs from a data file; pairs whose chosen and rejected texts match are skipped and counted.

    Args:
        path: a data file or folder (see the module docstring for formats and line numbers).
        fields: the column names to read. A margin must be a number (JSON, Arrow); CSV text is parsed.
    Returns:
        (pairs, report). `report.skipped` counts pairs with chosen == rejected after stripping whitespace.
    Raises:
        DataError: the first bad row, naming file:line and field.
    """
    path = Path(path)
    pairs, rows_read, same, first_same = [], 0, 0, ""
    for line, row in read_rows(path):
        rows_read += 1
        pair = _preference_pair(row, fields, path, line)
        if pair.chosen.strip() == pair.rejected.strip():
            same, first_same = same + 1, first_same or pair.source
            continue
        pairs.append(pair)
    if same:
        logger.warning("skipped %d pairs with chosen == rejected (first at %s)", same, first_same)
    return pairs, LoadReport(str(path), rows_read, len(pairs), {SAME_RESPONSES: same} if same else {})


def load_prompts(path: str | Path, field: str = "prompt") -> tuple[list[Prompt], LoadReport]:
    """Prompts (text or messages) from a data file, in file order; duplicates are kept.

    Raises:
        DataError: the first bad row, naming file:line and field.
    """
    path = Path(path)
    prompts = [_prompt(_get(row, field, path, line), path, line, field) for line, row in read_rows(path)]
    return prompts, LoadReport(str(path), len(prompts), len(prompts), {})


RESERVED_COLUMNS = ("prompts", "completions")  # what a reward function takes positionally (rlhfkit.rewards)


def load_prompt_rows(path: str | Path, field: str = "prompt") -> tuple[list[Prompt], list[dict], LoadReport]:
    """Prompts as `load_prompts`, and each row's other fields, its columns (`answer`, `tests`, `metadata`,
    ...), which the online trainers pass to reward functions as keyword lists (`rlhfkit.rewards`).

    Every row gives the columns of the first row, no more and no fewer (a reward function gets one value per
    completion), each value one JSON can hold: null, true/false, a finite number, text, or lists and objects
    (string keys) of these, so that samples.jsonl can record it. A missing cell of Parquet is null.

    Returns:
        (prompts, columns: one {name: value} per prompt, in file order, report).
    Raises:
        DataError: the first bad row, naming file:line and field: the prompt (as `load_prompts`), a column
            missing or not in the first row, a column named `prompts` or `completions`, or a value JSON
            cannot hold (NaN, bytes, a date, ...).
    """
    path = Path(path)
    prompts, columns, first_line, names = [], [], None, []
    for line, row in read_rows(path):
        prompts.append(_prompt(_get(row, field, path, line), path, line, field))
        other = {str(name): value for name, value in row.items() if name != field}
        if first_line is None:
            first_line, names = line, list(other)
            reserved = [name for name in names if name in RESERVED_COLUMNS]
            if reserved:
                hint = "is a reserved name: reward functions get the prompts and completions themselves"
                raise DataError(path, line, reserved[0], hint + "; rename the column")
        for name in names:
            if name not in other:
                raise DataError(path, line, name, f"is missing; the first row (line {first_line}) has it and "
                                                  "every row must give the same columns (a reward function "
                                                  "gets one value per completion)")
        for name, value in other.items():
            if name not in names:
                raise DataError(path, line, name, f"is not in the first row (line {first_line}); every row "
                                                  "must give the same columns")
            if (problem := _not_json(value)) is not None:
                hint = (f"holds {problem}, which JSON cannot hold; give null, true/false, finite numbers, "
                        "text, or lists and objects of these")
                raise DataError(path, line, name, hint)
        columns.append(other)
    return prompts, columns, LoadReport(str(path), len(prompts), len(prompts), {})


def _not_json(value: object) -> str | None:
    """What in `value` JSON cannot represent (e.g. "nan", "a bytes"), or None when it can."""
    if value is None or isinstance(value, (bool, int, str)):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return next((p for p in map(_not_json, value) if p is not None), None)
    if isinstance(value, dict):
        if any(not isinstance(key, str) for key in value):
            return "an object key that is not text"
        return next((p for p in map(_not_json, value.values()) if p is not None), None)
    return f"a {type(value).__name__}"


def load_demonstrations(
    path: str | Path, prompt_field: str = "prompt", response_field: str = "response"
) -> tuple[list[Demonstration], LoadReport]:
    """SFT demonstrations from a data file.

    Without a prompt field, a conversational response (e.g. TRL's `messages` column, passed as
    `response_field="messages"`) supplies its own prompt: the turns before its final assistant message.

    Raises:
        DataError: the first bad row, naming file:line and field.
    """
    path = Path(path)
    demonstrations = []
    for line, row in read_rows(path):
        response = _get(row, response_field, path, line)
        if prompt_field not in row and _is_conversation(response):
            prompt = _implicit_prompt({response_field: response}, path, line, prompt_field)
        else:
            prompt = _prompt(_get(row, prompt_field, path, line), path, line, prompt_field)
        text = _response(response, path, line, response_field)
        demonstrations.append(Demonstration(prompt, text, source=f"{path}:{line}"))
    return demonstrations, LoadReport(str(path), len(demonstrations), len(demonstrations), {})


def split_train_eval(items: list, eval_fraction: float, seed: int) -> tuple[list, list]:
    """Split items into (train, eval), deterministically given the seed; both keep the input order.

    The eval items are the first `max(1, round(n * eval_fraction))` indices of a `random.Random(seed)`
    permutation, capped at n - 1 so train is never empty. With `eval_fraction == 0` or fewer than 2 items,
    everything is train.
    """
    if not 0 <= eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in [0, 1), got {eval_fraction}")
    if eval_fraction == 0 or len(items) < 2:
        return list(items), []
    n_eval = min(len(items) - 1, max(1, round(len(items) * eval_fraction)))
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    is_eval = set(order[:n_eval])
    train = [item for index, item in enumerate(items) if index not in is_eval]
    return train, [item for index, item in enumerate(items) if index in is_eval]


def load_with_held_out(load, path: str | Path, eval_path: str | Path | None, eval_fraction: float, seed: int
                       ) -> tuple[list, list, list[LoadReport]]:
    """(train, held_out, reports): held-out records from `eval_path`, else a seeded `split_train_eval` of
    `path`.

    Args: load: path -> (records, LoadReport), e.g. `load_preferences` or `load_demonstrations` with their
        fields.
    Raises: DataError if no training record is left."""
    train, report = load(path)
    reports = [report]
    if eval_path:
        held_out, eval_report = load(eval_path)
        reports.append(eval_report)
    else:
        train, held_out = split_train_eval(train, eval_fraction, seed)
    if not train:
        raise DataError(path, None, None, "no usable rows after validation")
    return train, held_out, reports


def prompt_text(prompt: Prompt) -> str:
    """The plain text of a prompt: a string unchanged; for messages, the contents of the system and user
    turns in order, joined by "\\n" (assistant turns are left out)."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(message["content"] for message in prompt if message["role"] in ("system", "user"))
