"""Built-in verifiable tasks: problems from a seed, a fixed train/held-out split, exact graders.

    rows = rlhfkit.tasks.task_rows("add", "train")     # [{"prompt", "answer", "task", "split"}, ...]
    rlhfkit grpo --prompts train.jsonl --reward-fn rlhfkit.tasks:correct ...
    rlhfkit.train_grpo(prompts=rows, reward_fn=[rlhfkit.tasks.correct], ...)   # the same run from Python

Tasks (`TASKS`, rlhfkit/tasks/catalog.py; graders in rlhfkit/tasks/graders.py):
    add     one-digit addition "What is a + b? Reply with the number only.", a, b in 0-9
    add2    the same with a, b in 10-99
    format  one-digit addition answered on its own line as "Answer: N"
    sort    sort 4 distinct numbers from 1-9, "Reply with the sorted numbers only, separated by commas."
    units   "How many minutes are in 7 hours? Reply with the number only." (10 conversions, N in 2-12)
What is correct: add, add2, units: the last number in the reply equals the answer ("The answer is 12." and
"5 + 7 = 12" count; thousands commas are read). format: a line holding only "Answer: N" with the right N.
sort: the integers on the last line that holds any are the sorted list. A *format failure* is a reply from
which no answer can be read (no number; for format, no "Answer: N" line): a miss, counted apart from wrong
answers. The graders are pure functions of the completion text and the answer.

Split: a problem is held out when crc32(task:key) % 100 < HELDOUT_PERCENT, its key naming the problems that
count as one (3 + 4 and 4 + 3), so the split never changes with the seed or the number of rows asked for, and
no held-out problem (or its mirror image) is ever trained on. The seed only picks and orders the rows.

Measured before any RL (SmolLM2-135M-Instruct, chat template, τ 0.7, full softmax, bf16 autocast on a CPU
with AMX, rlhfkit's sampler and the task demo's evaluation; held-out problems, seed 0, 4 samples each;
`scripts/task_accuracy.py`). pass@1 [95% CI over problems] at 12 and 24 new tokens; pass@4, format
failures and ended (EOS) at 24:
    task    problems        12 tokens            24 tokens            pass@4  format failures  ended
    add     33 (all)        41.7% [33.3, 51.5]   40.9% [33.3, 49.2]   93.9%   10.6%            70%
    add2    64 of 2464       7.8% [ 4.3, 11.7]    8.2% [ 4.7, 12.1]   26.6%    5.5%            59%
    format  22 (all)         0.0%                 0.0%                 0.0%  100%               75%
    sort    64 of 1056       2.3% [ 0.4,  4.7]    3.9% [ 1.2,  7.8]    9.4%   10.5%            55%
    units   38 (all)         0.7% [ 0.0,  2.0]    3.3% [ 0.7,  5.9]   13.2%    6.6%            61%
The task demo's default is `add` (inside 5-70%, and pass@4 of 94% says the right answer is often sampled,
so RL has signal); at its 16 tokens and 8 samples: 40.5% [33.0, 48.5] on seed 0. add2's misses are mostly
wrong sums ("68 + 32 = 100" is right, "39 + 41" is "Three-and-a-half."), not format. format, sort and units
are near 0: a 0/1 reward then gives GRPO almost only groups with equal rewards, no signal (three other
wordings of format's instruction scored 0% too, one readable "Answer:" line in 88 samples each). Of add's
misses about a fifth to a third are format failures ("One, two, three, four, etc."), the rest wrong numbers
("7 + 7 equals 12", an operand echoed by a reply cut off at the token budget).
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Sequence

from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.tasks.catalog import TASKS, Problem, Task
from rlhfkit.tasks.graders import Grade

HELDOUT_PERCENT = 30  # share of a task's problem keys held out
SPLITS = ("train", "heldout")


def get_task(name: str) -> Task:
    """The built-in task `name`; ConfigError listing the tasks otherwise."""
    if name not in TASKS:
        raise ConfigError(f"config key 'task': {name!r} is not a built-in task; choose from "
                          f"{', '.join(TASKS)}")
    return TASKS[name]


def split_of(task: str, key: str) -> str:
    """"heldout" or "train" for a problem key of `task`: fixed by a hash of both, never by a seed."""
    return "heldout" if zlib.crc32(f"{task}:{key}".encode()) % 100 < HELDOUT_PERCENT else "train"


def task_rows(name: str, split: str, n: int | None = None, seed: int = 0) -> list[dict]:
    """Up to `n` problems of one split (all when None), in an order the seed fixes, as prompt-file rows.

    Args:
        name: a task of TASKS. split: "train" or "heldout". n: rows wanted (fewer when the split holds fewer).
        seed: picks and orders the rows; the same arguments always give the same rows.
    Returns:
        [{"prompt", "answer", "task", "split"}]: the columns `correct` reads.
    Raises:
        ConfigError: an unknown task or split, or n < 1.
    """
    task = get_task(name)
    if split not in SPLITS:
        raise ConfigError(f"config key 'split': {split!r}; choose train or heldout")
    if n is not None and n < 1:
        raise ConfigError(f"config key 'n': {n}; ask for at least one row")
    problems = [p for p in task.problems() if split_of(name, p.key) == split]
    random.Random(f"{name}:{split}:{seed}").shuffle(problems)
    return [{"prompt": p.prompt, "answer": p.answer, "task": name, "split": split} for p in problems[:n]]


def grade(task: str, completion: str, answer: str) -> Grade:
    """`task`'s grade of one completion against its answer."""
    return get_task(task).grade(completion, answer)


def grades(completions: Sequence[str], answer: Sequence[str], task: Sequence[str]) -> list[Grade]:
    """Grade each completion with its row's task and answer (the columns of `task_rows`)."""
    if not len(completions) == len(answer) == len(task):
        raise RlhfkitError(f"grading {len(completions)} completions with {len(answer)} answers and "
                           f"{len(task)} task names; give one of each per completion")
    out = []
    for completion, truth, name in zip(completions, answer, task):
        if name not in TASKS:
            raise RlhfkitError(f"column 'task': {name!r} is not a built-in task ({', '.join(TASKS)})")
        out.append(TASKS[name].grade(completion, str(truth)))
    return out


# --------------------------------------------------------------------------- reward functions (`--reward-fn`)
def correct(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str],
            task: Sequence[str]) -> list[float]:
    """`rlhfkit.tasks:correct`: 1.0 for a correct completion, else 0.0, graded by each row's `task` column
    against its `answer` column (the rows of `task_rows`)."""
    return [float(g.correct) for g in grades(completions, answer, task)]


def formatted(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str],
              task: Sequence[str]) -> list[float]:
    """`rlhfkit.tasks:formatted`: 1.0 when an answer can be read from the completion (right or wrong), 0.0 for
    a format failure. With weight 0 it logs the format rate (`rollout/reward/rlhfkit.tasks:formatted`)."""
    return [float(not g.format_failure) for g in grades(completions, answer, task)]


def _task_reward(name: str):
    """`rlhfkit.tasks:<name>_reward(prompts, completions, answer)`: `correct` for one task, no task column."""

    def reward(prompts: Sequence[str], completions: Sequence[str], answer: Sequence[str]) -> list[float]:
        return correct(prompts, completions, answer, [name] * len(completions))

    reward.__name__ = reward.__qualname__ = f"{name}_reward"  # what config.yaml records imports back
    reward.__doc__ = f"1.0 when the completion solves the `{name}` problem (its `answer` column), else 0.0."
    return reward


add_reward = _task_reward("add")
add2_reward = _task_reward("add2")
format_reward = _task_reward("format")
sort_reward = _task_reward("sort")
units_reward = _task_reward("units")

__all__ = ["TASKS", "HELDOUT_PERCENT", "Grade", "Problem", "Task", "get_task", "split_of", "task_rows",
           "grade", "grades", "correct", "formatted", "add_reward", "add2_reward", "format_reward",
           "sort_reward", "units_reward"]
