"""Tests for rlhfkit.data.readers: every format loads, every bad row names file:line:field."""

from __future__ import annotations

import json
import logging

import datasets
import pandas as pd
import pytest

from rlhfkit.data.readers import (
    Demonstration,
    LoadReport,
    PreferenceFields,
    PreferencePair,
    load_demonstrations,
    load_preferences,
    load_prompts,
    prompt_text,
    read_rows,
    split_train_eval,
)
from rlhfkit.errors import DataError

ROWS = [
    {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
    {"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Rome"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def raises_at(path, line, field=None):
    """pytest.raises matching the exact `file:line:` prefix and, if given, the field name."""
    where = f"{path}:{line}:"
    pattern = f"^{where} field '{field}'" if field else f"^{where}"
    return pytest.raises(DataError, match=pattern.replace("[", r"\[").replace("]", r"\]").replace(".", r"\."))


# --- each format loads -------------------------------------------------------------------------------------


def test_jsonl_loads_with_physical_line_numbers(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(ROWS[1]) + "\n")
    pairs, report = load_preferences(path)
    assert pairs == [
        PreferencePair("2+2?", "4", "5", None, f"{path}:1"),
        PreferencePair("Capital of France?", "Paris", "Rome", None, f"{path}:3"),  # blank line 2 counted
    ]
    assert report == LoadReport(str(path), rows_read=2, kept=2, skipped={})


def test_json_extension_is_read_as_json_lines(tmp_path):
    path = write_jsonl(tmp_path / "prefs.json", ROWS)
    assert [row for _, row in read_rows(path)] == ROWS


def test_csv_loads_with_header_as_line_one(tmp_path):
    path = tmp_path / "prefs.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    pairs, report = load_preferences(path)
    assert [(p.prompt, p.chosen, p.rejected, p.source) for p in pairs] == [
        ("2+2?", "4", "5", f"{path}:2"),
        ("Capital of France?", "Paris", "Rome", f"{path}:3"),
    ]
    assert (report.rows_read, report.kept) == (2, 2)


def test_csv_line_numbers_count_multiline_cells_and_blank_lines(tmp_path):
    path = tmp_path / "prefs.csv"
    # line 1 header, line 2-3 a row whose chosen cell spans two lines, line 4 blank, line 5 a bad row
    path.write_text('prompt,chosen,rejected\nhi,"hello\nthere",bye\n\nhi,,bye\n')
    with raises_at(path, 5, "chosen"):
        load_preferences(path)
    path.write_text('prompt,chosen,rejected\nhi,"hello\nthere",bye\n\nhi,yo,bye\n')
    assert [p.source for p in load_preferences(path)[0]] == [f"{path}:2", f"{path}:5"]
    assert load_preferences(path)[0][0].chosen == "hello\nthere"


def test_parquet_loads_with_row_numbers(tmp_path):
    path = tmp_path / "prefs.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    pairs, report = load_preferences(path)
    assert [(p.chosen, p.source) for p in pairs] == [("4", f"{path}:1"), ("Paris", f"{path}:2")]
    assert report.rows_read == 2


def test_dataset_folder_loads(tmp_path):
    path = tmp_path / "prefs_ds"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(path))
    pairs, _ = load_preferences(path)
    assert [(p.prompt, p.chosen, p.rejected, p.source) for p in pairs] == [
        ("2+2?", "4", "5", f"{path}:1"),
        ("Capital of France?", "Paris", "Rome", f"{path}:2"),
    ]


def test_dataset_dict_folder_uses_train_split(tmp_path):
    path = tmp_path / "dd"
    train = datasets.Dataset.from_list(ROWS[:1])
    datasets.DatasetDict({"train": train, "test": datasets.Dataset.from_list(ROWS[1:])}).save_to_disk(
        str(path)
    )
    assert [p.chosen for p in load_preferences(path)[0]] == ["4"]


def test_dataset_dict_without_train_split_lists_the_splits(tmp_path):
    path = tmp_path / "dd"
    splits = {"dev": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS)}
    datasets.DatasetDict(splits).save_to_disk(str(path))
    with pytest.raises(DataError, match=r"has splits dev, test but none named 'train'") as info:
        load_preferences(path)
    assert str(info.value).startswith(f"{path}: ")


# --- file-level errors -------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value) == f"{path}: file not found"


def test_unknown_extension_lists_supported_formats(tmp_path):
    path = tmp_path / "prefs.txt"
    path.write_text("hello\n")
    with pytest.raises(DataError) as info:
        read_rows(path)
    message = str(info.value)
    assert message.startswith(f"{path}: unsupported file type '.txt'")
    assert all(ext in message for ext in (".jsonl", ".json", ".csv", ".parquet", "save_to_disk"))


@pytest.mark.parametrize(
    "name, text", [("e.jsonl", ""), ("e.jsonl", "\n  \n"), ("e.csv", ""), ("e.csv", "a,b\n")]
)
def test_empty_file(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match="empty") as info:
        load_prompts(path)
    assert str(info.value).startswith(f"{path}: file is empty")


def test_empty_parquet(tmp_path):
    path = tmp_path / "e.parquet"
    pd.DataFrame({"prompt": pd.Series([], dtype=str)}).to_parquet(path)
    with pytest.raises(DataError, match="file is empty"):
        load_prompts(path)


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + '{"prompt": "x", "chosen": \n')
    with pytest.raises(DataError) as info:
        load_preferences(path)
    # '{"prompt": "x", "chosen":' is 25 characters, so the missing value is at column 26
    assert str(info.value) == f"{path}:2: malformed JSON: Expecting value (column 26)"


def test_json_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps(["a", "b"]) + "\n")
    with raises_at(path, 2):
        load_preferences(path)
    with pytest.raises(DataError, match="expected a JSON object, got list"):
        load_preferences(path)


def test_csv_row_with_extra_column(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\na,b,c,d\n")
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value).startswith(f"{path}:3: malformed CSV: Expected 3 fields, saw 4;")
    # pandas calls the bad row "line 3"; its physical line is 4, after a cell spanning lines 2-3
    path.write_text('prompt,chosen,rejected\na,"b\nb",c\na,b,c,d\n')
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value).startswith(f"{path}:4: malformed CSV: Expected 3 fields, saw 4;")


def test_csv_unclosed_quote(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text('prompt,chosen,rejected\na,b,c\n\na,"b,c\n')
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value).startswith(f"{path}:4: malformed CSV: EOF inside string;")


def test_csv_row_with_missing_column(tmp_path):
    # pandas silently pads a short row; the reader still reports it
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\na,b\n")
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value).startswith(f"{path}:3: has 2 cells but the header has 3 columns")


# --- field-level errors ------------------------------------------------------------------------------------


def bad_row_file(tmp_path, bad_row):
    """A JSONL file whose line 2 is `bad_row`."""
    return write_jsonl(tmp_path / "prefs.jsonl", [ROWS[0], bad_row])


def test_missing_field_lists_the_keys_present(tmp_path):
    path = bad_row_file(tmp_path, {"prompt": "p", "rejected": "r"})
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value).startswith(f"{path}:2: field 'chosen' is missing (the row has: prompt, rejected)")


@pytest.mark.parametrize("value", ["", "   \n", None, float("nan")])  # json.dumps writes NaN
def test_empty_field(tmp_path, value):
    path = bad_row_file(tmp_path, {"prompt": "p", "chosen": "c", "rejected": value})
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value) == f"{path}:2: field 'rejected' is empty; fill it in or remove the row"


@pytest.mark.parametrize("value, kind", [(3, "int"), (True, "bool"), ({"text": "c"}, "dict")])
def test_non_string_field(tmp_path, value, kind):
    path = bad_row_file(tmp_path, {"prompt": "p", "chosen": value, "rejected": "r"})
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value) == (
        f"{path}:2: field 'chosen' must be a string or a list of {{role, content}} messages, got {kind}"
    )


def test_non_string_prompt(tmp_path):
    path = bad_row_file(tmp_path, {"prompt": 7, "chosen": "c", "rejected": "r"})
    with raises_at(path, 2, "prompt"):
        load_preferences(path)


def test_csv_empty_cell_is_empty(tmp_path):
    path = tmp_path / "prefs.csv"
    path.write_text("prompt,chosen,rejected\na,b,c\na,,c\n")
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value) == f"{path}:3: field 'chosen' is empty; fill it in or remove the row"


def test_parquet_missing_cell_is_empty(tmp_path):
    path = tmp_path / "prefs.parquet"
    pd.DataFrame({"prompt": ["a", None, "c"]}).to_parquet(path)
    with raises_at(path, 2, "prompt"):
        load_prompts(path)


def test_nan_margin_is_empty(tmp_path):
    rows = [{**ROWS[0], "m": 1.0}, {**ROWS[1], "m": float("nan")}]
    parquet = tmp_path / "prefs.parquet"
    pd.DataFrame(rows).to_parquet(parquet)  # Arrow stores pandas' NaN as null
    folder = tmp_path / "prefs_ds"
    datasets.Dataset.from_list(rows).save_to_disk(str(folder))  # datasets hands back NaN itself
    for path in (parquet, folder):
        with pytest.raises(DataError) as info:
            load_preferences(path, PreferenceFields(margin="m"))
        assert str(info.value).startswith(f"{path}:2: field 'm' is empty")


def test_bad_message_role_names_the_message(tmp_path):
    chosen = [user("hi"), {"role": "bot", "content": "hello"}]
    path = bad_row_file(tmp_path, {"prompt": "p", "chosen": chosen, "rejected": "r"})
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert (
        str(info.value)
        == f"{path}:2: field 'chosen[1].role' must be one of system, user, assistant; got 'bot'"
    )


@pytest.mark.parametrize(
    "message, field",
    [
        ({"role": "user"}, "prompt[0].content"),
        ({"role": "user", "content": 5}, "prompt[0].content"),
        ({"content": "x"}, "prompt[0].role"),
        ("just text", "prompt[0]"),
    ],
)
def test_bad_prompt_message(tmp_path, message, field):
    path = bad_row_file(tmp_path, {"prompt": [message], "chosen": "c", "rejected": "r"})
    with raises_at(path, 2, field):
        load_preferences(path)


def test_conversational_response_must_end_with_assistant(tmp_path):
    path = bad_row_file(tmp_path, {"prompt": "p", "chosen": [assistant("a"), user("b")], "rejected": "r"})
    with raises_at(path, 2, "chosen[1].role"):
        load_preferences(path)


@pytest.mark.parametrize("margin", ["0.5", True, float("inf"), None])
def test_bad_margin(tmp_path, margin):
    # a JSON string is not a number (only CSV cells, which are all text, are parsed); inf -> Infinity
    rows = [{**ROWS[0], "score_gap": 1}, {**ROWS[1], "score_gap": margin}]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    with raises_at(path, 2, "score_gap"):
        load_preferences(path, PreferenceFields(margin="score_gap"))


def test_margin_is_read_as_float(tmp_path):
    rows = [{**ROWS[0], "m": 2}, {**ROWS[1], "m": -0.25}]
    pairs, _ = load_preferences(write_jsonl(tmp_path / "p.jsonl", rows), PreferenceFields(margin="m"))
    assert [p.margin for p in pairs] == [2.0, -0.25]
    csv_path = tmp_path / "p.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    assert [p.margin for p in load_preferences(csv_path, PreferenceFields(margin="m"))[0]] == [2.0, -0.25]


def test_missing_margin_field_when_configured(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", ROWS)
    with raises_at(path, 1, "m"):
        load_preferences(path, PreferenceFields(margin="m"))


# --- skipping, conversations, field names ------------------------------------------------------------------


def test_chosen_equal_rejected_is_skipped_counted_and_logged(tmp_path, caplog):
    rows = [
        ROWS[0],
        {"prompt": "p", "chosen": "same", "rejected": " same\n"},
        ROWS[1],
        {**ROWS[1], "chosen": "Rome"},
    ]
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    with caplog.at_level(logging.WARNING, logger="rlhfkit.data.readers"):
        pairs, report = load_preferences(path)
    assert [p.source for p in pairs] == [f"{path}:1", f"{path}:3"]
    assert report == LoadReport(str(path), rows_read=4, kept=2, skipped={"chosen == rejected": 2})
    assert report.summary() == f"{path}: 4 rows read, 2 kept, 2 skipped (chosen == rejected: 2)"
    assert [r.getMessage() for r in caplog.records] == [
        f"skipped 2 pairs with chosen == rejected (first at {path}:2)"
    ]


def test_summary_without_skips():
    assert LoadReport("prefs.jsonl", 3, 3, {}).summary() == "prefs.jsonl: 3 rows read, 3 kept, 0 skipped"


def test_explicit_conversational_prompt(tmp_path):
    prompt = [{"role": "system", "content": "Be brief."}, user("2+2?")]
    row = {"prompt": prompt, "chosen": [assistant("4")], "rejected": [assistant("5")]}
    pairs, _ = load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))
    assert pairs[0].prompt == (
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+2?"},
    )
    assert (pairs[0].chosen, pairs[0].rejected) == ("4", "5")
    assert prompt_text(pairs[0].prompt) == "Be brief.\n2+2?"


def test_conversational_fields_from_parquet_and_dataset_folder(tmp_path):
    row = {"prompt": [user("2+2?")], "chosen": [assistant("4")], "rejected": [assistant("5")]}
    parquet = tmp_path / "p.parquet"
    pd.DataFrame([row]).to_parquet(parquet)
    folder = tmp_path / "ds"
    datasets.Dataset.from_list([row]).save_to_disk(str(folder))
    for path in (parquet, folder):
        pair = load_preferences(path)[0][0]
        assert (pair.prompt, pair.chosen, pair.rejected) == (({"role": "user", "content": "2+2?"},), "4", "5")


def test_implicit_prompt_is_the_shared_prefix(tmp_path):
    turns = [user("Hi"), assistant("Hello!"), user("2+2?")]
    row = {"chosen": [*turns, assistant("4")], "rejected": [*turns, assistant("5")]}
    pair = load_preferences(write_jsonl(tmp_path / "p.jsonl", [row]))[0][0]
    assert pair.prompt == tuple(turns)
    assert (pair.chosen, pair.rejected) == ("4", "5")
    assert prompt_text(pair.prompt) == "Hi\n2+2?"


def test_implicit_prompt_must_be_shared(tmp_path):
    row = {"chosen": [user("2+2?"), assistant("4")], "rejected": [user("3+3?"), assistant("6")]}
    path = write_jsonl(tmp_path / "p.jsonl", [row])
    with pytest.raises(DataError, match="differ before their final assistant message") as info:
        load_preferences(path)
    assert str(info.value).startswith(
        f"{path}:1: field 'prompt' is missing and 'chosen' and 'rejected' differ"
    )


def test_implicit_prompt_must_not_be_empty(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"chosen": [assistant("4")], "rejected": [assistant("5")]}])
    with raises_at(path, 1, "prompt"):
        load_preferences(path)


# --- Anthropic HH rows: whole conversations as text in chosen/rejected, no prompt field -------------------


def hh(*turns):
    """Anthropic HH text: alternating Human/Assistant turns, each after a blank line ('\\n\\nHuman: ...')."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {turn}" for i, turn in enumerate(turns))


def test_hh_rows_split_at_the_last_shared_assistant_marker(tmp_path):
    rows = [
        {"chosen": hh("What is 2+2?", "4."), "rejected": hh("What is 2+2?", "5.")},
        # multi-turn, and responses that share their first words: the prompt still ends at the marker
        {"chosen": hh("Hi", "Hello!", "Tell me a joke", "I think a cat sat."),
         "rejected": hh("Hi", "Hello!", "Tell me a joke", "I think not.")},
    ]
    path = write_jsonl(tmp_path / "hh.jsonl", rows)
    pairs, report = load_preferences(path)
    assert pairs[0] == PreferencePair((user("What is 2+2?"),), "4.", "5.", None, f"{path}:1")
    assert pairs[1].prompt == (user("Hi"), assistant("Hello!"), user("Tell me a joke"))
    assert (pairs[1].chosen, pairs[1].rejected) == ("I think a cat sat.", "I think not.")
    assert (report.rows_read, report.kept) == (2, 2)


def test_hh_prompt_is_rendered_by_the_chat_template(tmp_path):
    from rlhfkit.data.collate import template_prompts
    from tests.conftest import make_tokenizer

    row = {"chosen": hh("hi", "hello", "a poem", "sun"), "rejected": hh("hi", "hello", "a poem", "moon")}
    pair = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [row]))[0][0]
    texts, _ = template_prompts(make_tokenizer(), [pair.prompt])
    assert texts == ["<|im_start|>user hi<|im_end|> <|im_start|>assistant hello<|im_end|> "
                     "<|im_start|>user a poem<|im_end|> <|im_start|>assistant "]


def test_hh_rows_with_equal_conversations_are_skipped(tmp_path):
    path = write_jsonl(tmp_path / "hh.jsonl", [{"chosen": hh("q", "a"), "rejected": hh("q", "b")},
                                               {"chosen": hh("q", "a"), "rejected": hh("q", "a")}])
    pairs, report = load_preferences(path)
    assert len(pairs) == 1 and report.skipped == {"chosen == rejected": 1}


def test_hh_prompt_with_text_before_the_first_turn_stays_text(tmp_path):
    row = {"chosen": "Be kind." + hh("q", "a"), "rejected": "Be kind." + hh("q", "b")}
    pair = load_preferences(write_jsonl(tmp_path / "hh.jsonl", [row]))[0][0]
    assert (pair.prompt, pair.chosen, pair.rejected) == ("Be kind.\n\nHuman: q\n\nAssistant:", "a", "b")


NO_SHARED_PROMPT = ("is missing and 'chosen' and 'rejected' share no prefix ending in '\\n\\nAssistant:' "
                    "(Anthropic HH format); add a 'prompt' field")


@pytest.mark.parametrize("row, field, hint", [
    ({"chosen": "a b", "rejected": "a c"}, "prompt",  # text without HH's markers: no shared prompt
     NO_SHARED_PROMPT),
    ({"chosen": hh("q", "a"), "rejected": hh("other", "a")}, "prompt",  # they differ before the first reply
     NO_SHARED_PROMPT),
    ({"chosen": hh("q", "a"), "rejected": hh("q") + "\n\nAssistant: "}, "rejected",
     "holds no response after the last '\\n\\nAssistant:' of the prompt"),
])
def test_hh_rows_without_a_shared_prompt_name_file_line_and_field(tmp_path, row, field, hint):
    path = bad_row_file(tmp_path, row)
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value) == f"{path}:2: field '{field}' {hint}"


def test_configurable_field_names(tmp_path):
    rows = [{"question": "q", "good": "g", "bad": "b", "gap": 0.5}]
    fields = PreferenceFields(prompt="question", chosen="good", rejected="bad", margin="gap")
    pairs, _ = load_preferences(write_jsonl(tmp_path / "p.jsonl", rows), fields)
    assert pairs == [PreferencePair("q", "g", "b", 0.5, f"{tmp_path / 'p.jsonl'}:1")]
    with raises_at(tmp_path / "p.jsonl", 1, "chosen"):
        load_preferences(tmp_path / "p.jsonl")  # the default names are not there


def test_load_prompts_keeps_duplicates_and_order(tmp_path):
    rows = [{"q": "a"}, {"q": [user("b")]}, {"q": "a"}]
    prompts, report = load_prompts(write_jsonl(tmp_path / "p.jsonl", rows), field="q")
    assert prompts == ["a", ({"role": "user", "content": "b"},), "a"]
    assert (report.rows_read, report.kept, report.skipped) == (3, 3, {})


def test_load_demonstrations(tmp_path):
    rows = [
        {"instruction": "Say hi", "output": "hi"},
        {"instruction": [user("Say yo")], "output": [assistant("yo")]},
    ]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    demos, report = load_demonstrations(path, prompt_field="instruction", response_field="output")
    assert demos == [
        Demonstration("Say hi", "hi", f"{path}:1"),
        Demonstration(({"role": "user", "content": "Say yo"},), "yo", f"{path}:2"),
    ]
    assert report.kept == 2


def test_demonstrations_from_a_messages_column(tmp_path):
    row = {"messages": [user("Say hi"), assistant("hi")]}
    path = write_jsonl(tmp_path / "sft.jsonl", [row])
    demos, _ = load_demonstrations(path, response_field="messages")
    assert demos == [Demonstration(({"role": "user", "content": "Say hi"},), "hi", f"{path}:1")]


def test_demonstration_missing_response(tmp_path):
    path = write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "p", "response": "r"}, {"prompt": "p"}])
    with raises_at(path, 2, "response"):
        load_demonstrations(path)


# --- split_train_eval and prompt_text ----------------------------------------------------------------------


def test_split_is_deterministic_disjoint_and_complete():
    items = list(range(100))
    train, eval_ = split_train_eval(items, 0.1, seed=0)
    assert (len(train), len(eval_)) == (90, 10)
    assert sorted(train + eval_) == items  # disjoint and complete
    assert train == sorted(train) and eval_ == sorted(eval_)  # input order kept
    assert split_train_eval(items, 0.1, seed=0) == (train, eval_)
    assert split_train_eval(items, 0.1, seed=1)[1] != eval_


def test_split_sizes():
    assert split_train_eval(list("abc"), 0.0, seed=0) == (["a", "b", "c"], [])
    assert len(split_train_eval(list("abc"), 0.01, seed=0)[1]) == 1  # at least one eval item
    assert len(split_train_eval(list("ab"), 0.9, seed=0)[0]) == 1  # train never empty
    assert split_train_eval(["a"], 0.5, seed=0) == (["a"], [])
    with pytest.raises(ValueError):
        split_train_eval(list("abc"), 1.0, seed=0)


def test_prompt_text_leaves_out_assistant_turns():
    assert prompt_text("plain") == "plain"
    messages = ({"role": "system", "content": "S"}, user("U1"), assistant("A"), user("U2"))
    assert prompt_text(messages) == "S\nU1\nU2"


# --- inputs the property tests (test_properties.py) found: each was a traceback or a two-line error ---------


@pytest.mark.parametrize(
    "line, message",
    [
        (b"[" * 5000, "malformed JSON: nested too deeply to parse"),  # was a RecursionError
        (b'{"prompt": ' + b"9" * 5000 + b"}",  # was a ValueError: Python refuses ints over 4300 digits
         "malformed JSON: Exceeds the limit (4300 digits) for integer string conversion"),
        (b'{"pro\\nmpt": 1, "x": 2}',  # a key with a line break was printed raw: a two-line error
         "field 'prompt' is missing (the row has: pro\\nmpt, x); add it, or pass your column's name to the loader"),
        (b'{"prompt": "a\\ud800b"}',  # a lone surrogate loaded, then broke the tokenizer (TypeError)
         "field 'prompt' holds a lone surrogate ('\\ud800' at character 1): not valid Unicode text"),
    ],
)
def test_bad_json_lines_give_one_line_errors(tmp_path, line, message):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(b'{"prompt": "fine"}\n' + line + b"\n")
    with pytest.raises(DataError) as info:
        load_prompts(path)
    assert str(info.value) == f"{path}:2: {message}"


def test_lone_surrogate_in_a_message_names_the_message(tmp_path):
    path = tmp_path / "prefs.jsonl"
    path.write_text('{"prompt": "p", "chosen": [{"role": "assistant", "content": "\\udfff"}], "rejected": "r"}\n')
    with raises_at(path, 1, "chosen[0].content"):
        load_preferences(path)


# --- prompt rows with columns (the fields reward functions get) -------------------------------------------


def test_prompt_rows_keep_every_other_field_in_file_order(tmp_path):
    from rlhfkit.data.readers import load_prompt_rows

    rows = [{"prompt": "2+2?", "answer": "4", "tests": [1, 2], "metadata": {"level": 1, "ok": True}},
            {"prompt": [user("3+3?")], "answer": "6", "tests": [], "metadata": None}]
    prompts, columns, report = load_prompt_rows(write_jsonl(tmp_path / "p.jsonl", rows))
    assert prompts == ["2+2?", (user("3+3?"),)]
    assert columns == [{"answer": "4", "tests": [1, 2], "metadata": {"level": 1, "ok": True}},
                       {"answer": "6", "tests": [], "metadata": None}]
    assert (report.rows_read, report.kept) == (2, 2)
    # a CSV's cells are text; a Parquet's missing cell is null
    pd.DataFrame({"q": ["a", "b"], "answer": [1.5, None]}).to_parquet(tmp_path / "p.parquet")
    assert load_prompt_rows(tmp_path / "p.parquet", field="q")[1] == [{"answer": 1.5}, {"answer": None}]
    (tmp_path / "p.csv").write_text("prompt,answer\nx,1\ny,\n")
    assert load_prompt_rows(tmp_path / "p.csv")[1] == [{"answer": "1"}, {"answer": ""}]


@pytest.mark.parametrize("rows, line, field, hint", [
    ([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}, {"prompt": "c"}], 3, "answer",
     "is missing; the first row (line 1) has it"),
    ([{"prompt": "a"}, {"prompt": "b", "answer": "2"}], 2, "answer", "is not in the first row (line 1)"),
    ([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": {"x": [1, float("nan")]}}], 2, "answer",
     "holds nan, which JSON cannot hold"),
    ([{"prompt": "a", "completions": "1"}], 1, "completions", "is a reserved name"),
])
def test_bad_prompt_row_columns_name_file_line_and_field(tmp_path, rows, line, field, hint):
    from rlhfkit.data.readers import load_prompt_rows

    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))  # json writes NaN as NaN
    with raises_at(path, line, field) as info:
        load_prompt_rows(path)
    assert hint in str(info.value) and "\n" not in str(info.value)


def test_a_value_json_cannot_hold_from_parquet_is_named(tmp_path):
    from rlhfkit.data.readers import load_prompt_rows

    pd.DataFrame({"prompt": ["a", "b"], "blob": [b"x", b"y"]}).to_parquet(tmp_path / "p.parquet")
    with raises_at(tmp_path / "p.parquet", 1, "blob") as info:
        load_prompt_rows(tmp_path / "p.parquet")
    assert "holds a bytes, which JSON cannot hold" in str(info.value)
