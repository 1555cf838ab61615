"""Property-based tests of the preference and prompt loaders (hypothesis): whatever bytes a JSONL or CSV file
holds, it either loads into well-formed records, or fails with ONE line naming the file, the line and (for a
bad value) the field. The CLI turns that into exit status 2, no traceback and nothing in the output folder."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import re
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rlhfkit.cli import main
from rlhfkit.data.collate import encode_completions
from rlhfkit.data.readers import ROLES, PreferenceFields, load_preferences, load_prompts
from rlhfkit.errors import DataError
from rlhfkit.rollout import encode_prompts
from tests.conftest import make_tokenizer

TOK = make_tokenizer("llama")  # what loads must tokenise: a lone surrogate once loaded, then broke the tokenizer

SETTINGS = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLI_SETTINGS = settings(SETTINGS, max_examples=6)
FIELDS = ("prompt", "chosen", "rejected", "margin")

# --- what goes into a file ---------------------------------------------------------------------------------

ODD_TEXT = ["", " ", "\n", " \t\r\n", "\ufeff", "\u2028", "\x00", "\ud800", "\udfff x", "é", "😀" * 3,
            "a,b", '"quoted"', "line\nbreak", "x" * 3000, "NaN", "1e999", "\\"]
# clean text is the common case, so that many files load and their records get checked too
clean_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12).filter(str.strip)
texts = st.one_of(clean_text, clean_text, st.text(max_size=12), st.sampled_from(ODD_TEXT))
scalars = st.one_of(texts, st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30),
                    st.floats(allow_nan=True, allow_infinity=True))
roles = st.one_of(st.sampled_from(ROLES), st.sampled_from(["bot", "User", "", "tool"]), scalars)
good_message = st.builds(lambda role, content: {"role": role, "content": content}, st.sampled_from(ROLES),
                         clean_text)
odd_message = st.one_of(
    st.dictionaries(st.sampled_from(["role", "content", "name"]), st.one_of(roles, scalars), max_size=3),
    scalars, st.lists(scalars, max_size=2),
)
messages = st.lists(st.one_of(good_message, good_message, odd_message), max_size=4)
values = st.one_of(texts, texts, scalars, messages, st.dictionaries(st.text(max_size=3), scalars, max_size=2))
odd_keys = st.one_of(st.text(max_size=6), st.sampled_from(["pro\nmpt", "Prompt", " prompt", "\ud800", ""]))
any_row = st.tuples(
    st.fixed_dictionaries({}, optional={name: values for name in FIELDS}),
    st.dictionaries(odd_keys, scalars, max_size=2),
).map(lambda parts: {**parts[1], **parts[0]})
good_row = st.fixed_dictionaries(
    {"prompt": st.one_of(clean_text, st.lists(good_message, min_size=1, max_size=3)), "chosen": clean_text,
     "rejected": clean_text},
    optional={"margin": st.one_of(st.integers(-10, 10), st.floats(-10, 10))},
)
rows = st.lists(st.one_of(good_row, good_row, good_row, any_row), min_size=1, max_size=6)

BAD_LINES = [b"", b"   ", b"\xff\xfe\x00bad", b"{", b'{"prompt": "x",}', b"[1, 2]", b"null", b'"text"', b"NaN",
             b"[" * 5000, b'{"prompt": ' + b"9" * 5000 + b"}", b'{"prompt": "\\ud800"}', b"\xef\xbb\xbf{}",
             b'{"prompt": "a", "prompt": 5}']


@st.composite
def jsonl_files(draw) -> bytes:
    lines = []
    for row in draw(rows):
        how = draw(st.sampled_from(["ascii"] * 6 + ["utf8"] * 3 + ["bom", "cut", "raw"]))
        if how == "raw":
            lines.append(draw(st.sampled_from(BAD_LINES)))
            continue
        text = json.dumps(row, ensure_ascii=how == "ascii")
        data = text.encode("utf-8", "surrogatepass")  # an unpaired surrogate becomes bytes that are not UTF-8
        lines.append({"bom": b"\xef\xbb\xbf" + data, "cut": data[: max(len(data) - 3, 1)]}.get(how, data))
    return draw(st.sampled_from([b"\n", b"\r\n"])).join(lines) + draw(st.sampled_from([b"", b"\n"]))


@st.composite
def csv_files(draw) -> bytes:
    header = draw(st.one_of(
        st.permutations(["prompt", "chosen", "rejected", "margin"]), st.permutations(["prompt", "chosen", "rejected"]),
        st.lists(st.sampled_from(["prompt", "chosen", "rejected", "margin", "x", ""]), max_size=5),
    ))
    buffer = io.StringIO()
    quoting = draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]))
    writer = csv.writer(buffer, quoting=quoting, lineterminator=draw(st.sampled_from(["\n", "\r\n", "\r"])))
    if header:
        writer.writerow(header)
    for _ in range(draw(st.integers(1, 5))):
        width = max(len(header) + draw(st.sampled_from([0] * 8 + [-1, 1])), 0)
        cells = st.one_of(clean_text, clean_text, clean_text, texts, st.integers(-9, 9).map(str))
        writer.writerow(draw(st.lists(cells, min_size=width, max_size=width)))
    data = buffer.getvalue().encode("utf-8", "surrogatepass")
    extra = draw(st.sampled_from([b""] * 6 + [b"\n\n", b'"unclosed,cell\n', b"\xff\xfe\n", b"a,b,c,d,e,f,g\n"]))
    return draw(st.sampled_from([b"", b"\xef\xbb\xbf"])) + data + extra


# --- the property ------------------------------------------------------------------------------------------


def physical_lines(data: bytes, suffix: str) -> list[bytes]:
    """The file's lines as the readers number them: JSON Lines split on "\\n"; CSV on any line ending."""
    return data.split(b"\n") if suffix == ".jsonl" else re.split(rb"\r\n|\r|\n", data)


def check_error(error: DataError, path: Path, data: bytes) -> None:
    """One line that starts with `path:line:` (a row's problem) or `path:` (the file's), and names a field that
    exists among the loader's fields when the problem is a value."""
    message = str(error)
    assert "\n" not in message and "\r" not in message, message
    n_lines = len(physical_lines(data, path.suffix))
    if error.line is None:
        assert message.startswith(f"{path}: "), message
        return
    assert 1 <= error.line <= n_lines, (error.line, n_lines, message)
    assert message.startswith(f"{path}:{error.line}: "), message
    if error.field is not None:
        assert re.split(r"[\[.]", error.field)[0] in FIELDS, message
        assert f"field '{error.field}'" in message


def is_unicode(text: str) -> bool:
    """Valid Unicode: no lone surrogate (which no tokenizer or UTF-8 writer accepts)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def is_text(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip()) and is_unicode(value)


def is_prompt(prompt: object) -> bool:
    """Non-empty text, or a non-empty tuple of {role, content} messages with a known role."""
    if isinstance(prompt, str):
        return is_text(prompt)
    return isinstance(prompt, tuple) and len(prompt) > 0 and all(
        isinstance(m, dict) and m["role"] in ROLES and isinstance(m["content"], str) and is_unicode(m["content"])
        for m in prompt
    )


def load_or_error(load, path: Path, data: bytes):
    """(records, report) when the file loads; None after checking the error when it does not."""
    try:
        return load(path)
    except DataError as error:
        check_error(error, path, data)
        return None


def write(folder: str, name: str, data: bytes) -> Path:
    path = Path(folder) / name
    path.write_bytes(data)
    return path


@SETTINGS
@given(data=st.one_of(jsonl_files(), csv_files()), use_margin=st.booleans())
def test_preferences_load_or_fail_with_one_located_line(data, use_margin):
    fields = PreferenceFields(margin="margin" if use_margin else None)
    with tempfile.TemporaryDirectory() as folder:
        for name in ("prefs.jsonl", "prefs.csv"):  # every file read both ways: JSON as CSV, CSV as JSON too
            path = write(folder, name, data)
            loaded = load_or_error(lambda p: load_preferences(p, fields), path, data)
            if loaded is None:
                continue
            pairs, report = loaded
            assert report.kept == len(pairs) and report.kept + sum(report.skipped.values()) == report.rows_read
            for pair in pairs:
                assert is_prompt(pair.prompt) and is_text(pair.chosen) and is_text(pair.rejected), pair
                assert pair.chosen.strip() != pair.rejected.strip()
                assert (pair.margin is None) == (not use_margin)
                assert pair.margin is None or (type(pair.margin) is float and math.isfinite(pair.margin))
                line = int(pair.source.rsplit(":", 1)[1])
                assert pair.source == f"{path}:{line}" and 1 <= line <= len(physical_lines(data, path.suffix))
            if pairs:
                encode_completions(TOK, [p.prompt for p in pairs], [p.chosen for p in pairs])


@SETTINGS
@given(data=jsonl_files())
def test_prompts_load_or_fail_with_one_located_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = write(folder, "prompts.jsonl", data)
        loaded = load_or_error(load_prompts, path, data)
        if loaded is not None:
            prompts, report = loaded
            assert report.rows_read == report.kept == len(prompts)
            assert all(is_prompt(p) for p in prompts), prompts
            encode_prompts(TOK, prompts)


@SETTINGS
@given(data=csv_files())
def test_csv_prompts_load_or_fail_with_one_located_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = write(folder, "prompts.csv", data)
        loaded = load_or_error(load_prompts, path, data)
        if loaded is not None:
            assert all(is_prompt(p) for p in loaded[0])


@SETTINGS
@given(data=jsonl_files())
def test_jsonl_error_names_the_first_bad_line(data):
    """The named line is the first bad one: the lines before it load, the line alone fails."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            load_preferences(write(folder, "p.jsonl", data))
            return
        except DataError as error:
            if error.line is None:
                return
            line = error.line
        lines = data.split(b"\n")
        try:
            load_preferences(write(folder, "before.jsonl", b"\n".join(lines[: line - 1])))
        except DataError as error:
            assert "file is empty" in str(error), str(error)
        with pytest.raises(DataError, match=r"alone\.jsonl:1: "):
            load_preferences(write(folder, "alone.jsonl", lines[line - 1]))


# --- the CLI: a few examples end to end (the data is bad, so no model is ever trained) ---------------------

BAD_ROW = b'{"prompt": "p", "chosen": "", "rejected": "r"}'  # appended, so every file fails to load


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def check_cli(command: str, argv: list[str], path: Path, output: Path, load) -> None:
    with pytest.raises(DataError) as expected:  # what the loader says about this file
        load(path)
    check_error(expected.value, path, path.read_bytes())
    code, err = run_cli(argv)
    assert code == 2, err
    assert f"rlhfkit {command}: error: {expected.value}\n" in err  # that one line, exactly
    assert "Traceback" not in err
    assert not output.exists() or not any(output.iterdir())  # nothing written


@CLI_SETTINGS
@given(data=jsonl_files())
@example(data=b'{"pro\\nmpt": "a key with a line break"}')  # once listed raw: a two-line error
@example(data=b'{"prompt": "\\ud800", "chosen": "c", "rejected": "r"}')  # once loaded: a TypeError in the tokenizer
def test_rm_cli_bad_preferences(tiny_bert, data):
    with tempfile.TemporaryDirectory() as folder:
        path, output = write(folder, "prefs.jsonl", data + b"\n" + BAD_ROW + b"\n"), Path(folder) / "out"
        argv = ["rm", "--data", str(path), "--output", str(output), "--base", tiny_bert]
        check_cli("rm", argv, path, output, load_preferences)


@CLI_SETTINGS
@given(data=jsonl_files())
@example(data=b"[" * 5000)  # once a RecursionError traceback
@example(data=b'{"prompt": ' + b"9" * 5000 + b"}")  # once a ValueError traceback (Python's int digit limit)
def test_ppo_cli_bad_prompts(tiny_llama, tiny_bert, data):
    with tempfile.TemporaryDirectory() as folder:
        path, output = write(folder, "prompts.jsonl", data + b"\n" + b'{"prompt": 5}\n'), Path(folder) / "out"
        argv = ["ppo", "--prompts", str(path), "--output", str(output), "--policy", tiny_llama,
                "--reward-model", tiny_bert]
        check_cli("ppo", argv, path, output, load_prompts)
