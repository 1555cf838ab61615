"""rlhfkit.tasks: the graders on hand-written completions, generation determinism, the split, and the reward
functions through the path `--reward-fn` takes (a prompt file's columns)."""

from __future__ import annotations

import json

import pytest

from rlhfkit import tasks
from rlhfkit.data.readers import load_prompt_rows
from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.rewards import columns_of, load_reward_functions
from rlhfkit.tasks import graders

# --------------------------------------------------------------------------- graders


@pytest.mark.parametrize("completion, answer, correct, parsed", [
    ("12", "12", True, "12"),
    ("The answer is 12.", "12", True, "12"),  # a full stop is not a decimal point
    ("5 + 7 = 12", "12", True, "12"),  # the last number is the answer
    ("12.0", "12", True, "12.0"),  # equal as numbers
    ("It is 1,200 grams.", "1200", True, "1200"),  # thousands commas are read
    ("12 is wrong, it's 13", "12", False, "13"),
    ("5 + 7 = 11", "12", False, "11"),
    ("-3", "3", False, "-3"),
    ("I don't know", "12", False, None),  # format failure: no number
    ("twelve", "12", False, None),
    ("", "12", False, None),
])
def test_last_number_grader(completion, answer, correct, parsed):
    grade = graders.grade_last_number(completion, answer)
    assert (grade.correct, grade.parsed, grade.format_failure) == (correct, parsed, parsed is None)


@pytest.mark.parametrize("completion, correct, parsed", [
    ("2, 4, 7, 9", True, "2, 4, 7, 9"),
    ("Sorted: 2, 4, 7, 9.", True, "2, 4, 7, 9"),
    ("7, 2, 9, 4 sorted is:\n2, 4, 7, 9", True, "2, 4, 7, 9"),  # the last line holding numbers counts
    ("2, 4, 7, 9\nThat was easy!", True, "2, 4, 7, 9"),  # lines without numbers are skipped
    ("2,4,7,9", True, "2, 4, 7, 9"),
    ("2, 4, 9, 7", False, "2, 4, 9, 7"),  # out of order
    ("2, 4, 7", False, "2, 4, 7"),  # one missing
    ("2, 4, 7, 9, 9", False, "2, 4, 7, 9, 9"),  # one extra
    ("2, 4, 7, 9\n7, 2, 9, 4", False, "7, 2, 9, 4"),  # the final line is the answer given
    ("I cannot sort these.", False, None),
])
def test_number_list_grader(completion, correct, parsed):
    grade = graders.grade_number_list(completion, "2, 4, 7, 9")
    assert (grade.correct, grade.parsed) == (correct, parsed)


@pytest.mark.parametrize("completion, correct, parsed", [
    ("Answer: 7", True, "7"),
    ("3 + 4 = 7\nAnswer: 7", True, "7"),
    ("answer:7.", True, "7"),
    ("**Answer:** 7", True, "7"),
    ("Answer: 6\nWait.\nAnswer: 7", True, "7"),  # the last such line
    ("Answer: 8", False, "8"),
    ("The answer is 7", False, None),  # format failure: no Answer line, whatever the numbers
    ("3 + 4 = 7", False, None),
    ("Answer: 7 apples", False, None),  # the line must hold the number alone
    ("My final Answer: 7", False, None),
])
def test_answer_line_grader(completion, correct, parsed):
    grade = graders.grade_answer_line(completion, "7")
    assert (grade.correct, grade.parsed) == (correct, parsed)


def test_every_task_grades_its_own_answers_correct_and_a_blank_as_a_format_failure():
    for name in tasks.TASKS:
        for row in tasks.task_rows(name, "heldout", 5):
            reply = f"Answer: {row['answer']}" if name == "format" else row["answer"]
            assert tasks.grade(name, reply, row["answer"]).correct, (name, row)
            assert tasks.grade(name, "no idea", row["answer"]).format_failure, name


# --------------------------------------------------------------------------- generation and split


def test_rows_are_deterministic_and_the_seed_only_reorders():
    assert tasks.task_rows("add2", "train", 20, seed=3) == tasks.task_rows("add2", "train", 20, seed=3)
    assert tasks.task_rows("add2", "train", 20, seed=3) != tasks.task_rows("add2", "train", 20, seed=4)
    by_seed = [{r["prompt"] for r in tasks.task_rows("add", "heldout", seed=s)} for s in (0, 1)]
    assert by_seed[0] == by_seed[1]  # the whole split: the same problems in another order
    row = tasks.task_rows("add", "train", 1)[0]
    assert set(row) == {"prompt", "answer", "task", "split"}
    assert (row["task"], row["split"]) == ("add", "train")
    a, b = (int(x) for x in row["prompt"].removeprefix("What is ").split("?")[0].split(" + "))
    assert row["answer"] == str(a + b)


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_no_heldout_problem_or_its_mirror_is_trained_on(name):
    train, heldout = tasks.task_rows(name, "train"), tasks.task_rows(name, "heldout")
    task = tasks.get_task(name)
    keys = {split: {p.key for p in task.problems() if p.prompt in {r["prompt"] for r in rows}}
            for split, rows in (("train", train), ("heldout", heldout))}
    assert keys["train"] and keys["heldout"] and not keys["train"] & keys["heldout"]
    assert len(train) + len(heldout) == sum(1 for _ in task.problems())  # every problem in one split
    assert 0.15 < len(keys["heldout"]) / (len(keys["train"]) + len(keys["heldout"])) < 0.45


def test_mirror_problems_share_a_split():
    heldout = {r["prompt"] for r in tasks.task_rows("add", "heldout")}
    for prompt in heldout:
        a, b = prompt.removeprefix("What is ").split("?")[0].split(" + ")
        assert prompt.replace(f"{a} + {b}", f"{b} + {a}") in heldout


def test_bad_task_split_or_count_is_a_config_error():
    with pytest.raises(ConfigError, match="'mul' is not a built-in task; choose from add"):
        tasks.task_rows("mul", "train")
    with pytest.raises(ConfigError, match="'test'; choose train or heldout"):
        tasks.task_rows("add", "test")
    with pytest.raises(ConfigError, match="at least one row"):
        tasks.task_rows("add", "train", 0)


# --------------------------------------------------------------------------- reward functions


def test_correct_reward_through_the_prompt_file_columns(tmp_path):
    rows = tasks.task_rows("add", "train", 2) + tasks.task_rows("sort", "train", 1)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts, columns, _ = load_prompt_rows(path)  # what the online trainers read for --reward-fn
    reward = load_reward_functions(["rlhfkit.tasks:correct", "rlhfkit.tasks:formatted=0"])
    completions = [f"The answer is {rows[0]['answer']}.", "no idea", rows[2]["answer"]]
    scores = reward.score(prompts, completions, columns_of(columns))
    assert scores == [1.0, 0.0, 1.0]  # formatted has weight 0: logged, not summed
    assert reward.last_components["rlhfkit.tasks:formatted"] == [1.0, 0.0, 1.0]


def test_per_task_rewards_need_only_the_answer_and_import_back_by_name():
    reward = load_reward_functions(["rlhfkit.tasks:add2_reward"])
    assert reward.score(["What is 10 + 15?"] * 2, ["25", "26"], {"answer": ["25", "25"]}) == [1.0, 0.0]
    for name in tasks.TASKS:
        fn = getattr(tasks, f"{name}_reward")
        assert (fn.__module__, fn.__qualname__) == ("rlhfkit.tasks", f"{name}_reward")  # config.yaml's name


def test_correct_names_an_unknown_task_column():
    with pytest.raises(RlhfkitError, match="column 'task': 'mul' is not a built-in task"):
        tasks.correct(["q"], ["1"], answer=["1"], task=["mul"])
