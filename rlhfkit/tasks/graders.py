"""Exact graders of the built-in tasks: pure functions that read the answer from a completion and compare it.

A grade has three outcomes. *Correct*: the answer read from the completion equals the ground truth. *Wrong*:
an answer was read and differs. *Format failure*: no answer could be read at all (no number in the text, no
`Answer: N` line), so the miss says nothing about the arithmetic. No model, no randomness, no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# a number as people write it: optional minus, digits, thousands groups ("1,000"), decimals ("2.5"); a
# sentence's full stop ("is 7.") is not a decimal point
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
INTEGER = re.compile(r"-?\d+")
# `Answer: 7` alone on its line (case-insensitive, optional markdown bold and a closing full stop)
ANSWER_LINE = re.compile(r"^[ \t]*(?:\*\*)?answer(?:\*\*)?[ \t]*:[ \t]*(?:\*\*)?[ \t]*(-?\d+)"
                         r"[ \t]*(?:\*\*)?\.?[ \t]*$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class Grade:
    """One completion's grade. `parsed` is the answer read from it (normalised text), None when none could be
    read: a format failure, never correct."""

    correct: bool
    parsed: str | None

    @property
    def format_failure(self) -> bool:
        return self.parsed is None


def last_number(text: str) -> str | None:
    """The last number in `text`, thousands commas removed ("1,000" -> "1000"), or None if there is none.

    Example: "3 + 4 = 7." -> "7"; "The answer is 1,200 grams" -> "1200"; "seven" -> None."""
    found = NUMBER.findall(text)
    return found[-1].replace(",", "") if found else None


def same_number(a: str, b: str) -> bool:
    """Whether two numbers written as text are equal as numbers ("12" == "12.0" == "012")."""
    try:
        return Decimal(a) == Decimal(b)
    except InvalidOperation:
        return False


def grade_last_number(completion: str, answer: str) -> Grade:
    """Correct when the completion's last number equals `answer`; format failure when it holds no number.

    "The answer is 12." and "5 + 7 = 12" are correct for 12; "12 is wrong, it's 13" is wrong (last number 13);
    "I don't know" is a format failure."""
    parsed = last_number(completion)
    return Grade(parsed is not None and same_number(parsed, answer), parsed)


def grade_number_list(completion: str, answer: str) -> Grade:
    """Correct when the integers on the completion's last line that holds any equal `answer`'s, in order
    ("2, 4, 7, 9"); format failure when no line holds an integer.

    The last such line is the reply's final answer: "7, 2, 9, 4 sorted:\\n2, 4, 7, 9" is correct; a list with
    a number missing, extra or out of order is wrong."""
    lines = [INTEGER.findall(line) for line in completion.splitlines()]
    lines = [numbers for numbers in lines if numbers]
    if not lines:
        return Grade(False, None)
    parsed = [str(int(n)) for n in lines[-1]]
    expected = [str(int(n)) for n in INTEGER.findall(answer)]
    return Grade(parsed == expected, ", ".join(parsed))


def grade_answer_line(completion: str, answer: str) -> Grade:
    """Correct when the completion's last `Answer: N` line (alone on its line) has N equal to `answer`; format
    failure when there is no such line, whatever numbers the text holds.

    "3 + 4 = 7\\nAnswer: 7" and "**Answer:** 7" are correct for 7; "Answer: 8" is wrong; "The answer is 7" and
    "Answer: 7 apples" are format failures (the line must hold the number alone)."""
    found = ANSWER_LINE.findall(completion)
    if not found:
        return Grade(False, None)
    parsed = str(int(found[-1]))
    return Grade(same_number(parsed, answer), parsed)
