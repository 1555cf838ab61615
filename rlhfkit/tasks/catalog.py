"""The built-in tasks: each a whole (small) space of problems, the prompt it is asked with, and its grader.

Every task enumerates all its problems (at most a few thousand), so generation is exact: a seed only picks
which problems a split returns and in what order. A problem's `key` says which problems count as the same
one for the train/held-out split (3 + 4 and 4 + 3 share a key, so one is never trained on while the other is
held out).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from rlhfkit.tasks import graders
from rlhfkit.tasks.graders import Grade


class Problem(NamedTuple):
    prompt: str
    answer: str  # the ground truth as text, what the grader compares with
    key: str  # problems with the same key are on the same side of the split


@dataclass(frozen=True)
class Task:
    """A verifiable task: `problems()` enumerates its whole space, `grade(completion, answer)` is exact."""

    name: str
    description: str  # one line: what is asked
    correct_when: str  # one line: what the grader accepts (the grader's docstring has examples)
    problems: Callable[[], Iterator[Problem]]
    grade: Callable[[str, str], Grade]


NUMBER_ONLY = "Reply with the number only."


def _addition(low: int, high: int, instruction: str) -> Callable[[], Iterator[Problem]]:
    """a + b for every a, b in [low, high]; key = the unordered pair."""

    def problems() -> Iterator[Problem]:
        for a, b in itertools.product(range(low, high + 1), repeat=2):
            yield Problem(f"What is {a} + {b}? {instruction}", str(a + b), f"{min(a, b)}+{max(a, b)}")

    return problems


def _sorting() -> Iterator[Problem]:
    """4 distinct numbers from 1-9 in every order; key = the set (its orderings are one problem)."""
    for numbers in itertools.permutations(range(1, 10), 4):
        shown, ordered = ", ".join(map(str, numbers)), sorted(numbers)
        yield Problem(f"Sort these numbers from smallest to largest: {shown}. Reply with the sorted numbers "
                      "only, separated by commas.", ", ".join(map(str, ordered)), "".join(map(str, ordered)))


# (from, to, factor): "How many <to> are in N <from>?"
CONVERSIONS = [("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24),
               ("weeks", "days", 7), ("years", "months", 12), ("feet", "inches", 12),
               ("meters", "centimeters", 100), ("kilometers", "meters", 1000), ("kilograms", "grams", 1000), ("liters", "milliliters", 1000)]


def _units() -> Iterator[Problem]:
    """N from-units in to-units for N in 2-12 and every CONVERSIONS row; each problem its own key."""
    for (source, target, factor), n in itertools.product(CONVERSIONS, range(2, 13)):
        yield Problem(f"How many {target} are in {n} {source}? {NUMBER_ONLY}", str(n * factor),
                      f"{n} {source}")


TASKS: dict[str, Task] = {task.name: task for task in [
    Task("add", "one-digit addition, 'What is a + b? Reply with the number only.' (a, b in 0-9)",
         "the last number in the reply is a + b", _addition(0, 9, NUMBER_ONLY), graders.grade_last_number),
    Task("add2", "two-digit addition, as add with a, b in 10-99",
         "the last number in the reply is a + b", _addition(10, 99, NUMBER_ONLY), graders.grade_last_number),
    Task("format", "one-digit addition answered on a line of its own, 'Answer: N'",
         "a line holding only 'Answer: N' (the last such line) has N = a + b",
         _addition(0, 9, "Give the final answer on its own line as 'Answer: <number>'."),
         graders.grade_answer_line),
    Task("sort", "sort 4 distinct numbers from 1-9, reply with the sorted list",
         "the integers on the reply's last line holding any are the sorted list", _sorting,
         graders.grade_number_list),
    Task("units", "unit conversions, 'How many minutes are in 7 hours?' (10 conversions, N in 2-12)",
         "the last number in the reply is the converted amount", _units, graders.grade_last_number),
]}
