"""rlhfkit.rewards: `module:function[=weight]` reward functions, summed, checked, and combined with an RM."""

import pytest

from rlhfkit.errors import ConfigError, RlhfkitError
from rlhfkit.eval.gold import gold_rewards
from rlhfkit.rewards import load_reward_functions, make_reward, parse_reward_spec

PROMPTS = ["say hi", "say bye", "count"]
RESPONSES = ["hi there", "bye", "one two three four"]

MODULE = '''
import math
import numpy as np

NOT_A_FUNCTION = 3

def n_words(prompts, completions):
    return [len(c.split()) for c in completions]

def has_prompt_word(prompts, completions, **kwargs):  # TRL's signature
    return [float(p.split()[-1] in c) for p, c in zip(prompts, completions)]

def as_array(prompts, completions):
    return np.arange(len(completions), dtype=np.float32)

def too_few(prompts, completions):
    return [1.0] * (len(completions) - 1)

def a_string(prompts, completions):
    return [0.0, "high", 1.0]

def a_none(prompts, completions):
    return [0.0, 1.0, None]

def a_nan(prompts, completions):
    return [0.0, math.nan, 1.0]

def an_inf(prompts, completions):
    return [0.0, 1.0, -math.inf]

def a_float(prompts, completions):
    return 1.0

def passed(prompts, completions):
    return [len(c) > 3 for c in completions]
'''


@pytest.fixture
def module_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(MODULE)
    return str(path)


def test_gold_works_as_a_reward_function():
    fns = load_reward_functions(["rlhfkit.eval.gold:gold_rewards"])
    assert fns.score(PROMPTS, RESPONSES) == gold_rewards(PROMPTS, RESPONSES)
    assert list(fns.components(PROMPTS, RESPONSES)) == ["rlhfkit.eval.gold:gold_rewards"]


def test_weighted_sum_and_components_by_file_path(module_file):
    fns = load_reward_functions([f"{module_file}:n_words=0.5", f"{module_file}:has_prompt_word=-2"])
    parts = fns.components(PROMPTS, RESPONSES)
    # words [2, 1, 4]; "hi" in "hi there", "bye" in "bye", "count" not in "one two three four": [1, 1, 0]
    assert parts == {f"{module_file}:n_words": [2.0, 1.0, 4.0], f"{module_file}:has_prompt_word": [1.0, 1.0, 0.0]}
    # 0.5·[2, 1, 4] − 2·[1, 1, 0] = [1 − 2, 0.5 − 2, 2 − 0] = [−1, −1.5, 2]
    assert fns.score(PROMPTS, RESPONSES) == [-1.0, -1.5, 2.0]


def test_module_on_the_path_arrays_and_bools(module_file, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_reward_functions(["my_rewards:as_array"]).score(PROMPTS, RESPONSES) == [0.0, 1.0, 2.0]
    # True/False count as 1/0: lengths 8, 3, 18 > 3
    assert load_reward_functions(["my_rewards:passed=2"]).score(PROMPTS, RESPONSES) == [2.0, 0.0, 2.0]


def test_a_tensor_result_is_accepted(tmp_path):
    path = tmp_path / "t.py"
    path.write_text("import torch\ndef f(prompts, completions):\n    return torch.tensor([0.5] * len(completions))\n")
    assert load_reward_functions([f"{path}:f"]).score(PROMPTS, RESPONSES) == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("spec, name, weight, is_file", [
    ("a.b:f", "a.b:f", 1.0, False), ("a.b:f=0.25", "a.b:f", 0.25, False), ("a:f=-1e-1", "a:f", -0.1, False),
    ("a:f=0", "a:f", 0.0, False), ("dir=x/file.py:f", "dir=x/file.py:f", 1.0, True),
    ("dir=x/file.py:f=3", "dir=x/file.py:f", 3.0, True), ("rewards/mod:f", "rewards/mod:f", 1.0, True)])
def test_parse_spec(spec, name, weight, is_file):
    parsed = parse_reward_spec(spec)
    assert (parsed.name, parsed.function, parsed.weight, parsed.is_file) == (name, "f", weight, is_file)


@pytest.mark.parametrize("spec, match", [
    ("rlhfkit.eval.gold", "is not module:function"),
    (":gold_rewards", "is not module:function"),
    ("rlhfkit.eval.gold:", "is not module:function"),
    ("rlhfkit.eval.gold:gold-rewards", "not a Python function name"),
    ("rlhfkit.eval.gold:gold_rewards=heavy", "weight 'heavy' is not a finite number"),
    ("rlhfkit.eval.gold:gold_rewards=nan", "weight 'nan' is not a finite number"),
    ("rlhfkit.eval.gold:gold_rewards=inf", "weight 'inf' is not a finite number"),
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz' \\(No module named 'no_such_module_xyz'\\)"),
    (".relative:f", "cannot import module '.relative'"),
    ("missing/file.py:f", "file 'missing/file.py' not found"),
    ("rlhfkit.eval.gold:no_such_function", "'rlhfkit.eval.gold' has no attribute 'no_such_function'"),
    ("rlhfkit.eval.gold:MAX_WORDS", "'rlhfkit.eval.gold:MAX_WORDS' is a int, not a function"),
])
def test_bad_specs_are_one_line_config_errors(spec, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_reward_functions([spec], key="ppo.reward_fn")
    assert str(info.value).startswith("config key 'ppo.reward_fn': ") and "\n" not in str(info.value)


def test_file_that_fails_to_import_says_why(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_package_xyz\n")
    with pytest.raises(ConfigError, match="ModuleNotFoundError: No module named 'no_such_package_xyz'"):
        load_reward_functions([f"{broken}:f"])
    bad_syntax = tmp_path / "bad_syntax.py"
    bad_syntax.write_text("def f(:\n")
    with pytest.raises(ConfigError, match="SyntaxError"):
        load_reward_functions([f"{bad_syntax}:f"])


def test_no_specs_and_duplicates_are_refused(module_file):
    with pytest.raises(ConfigError, match="no reward functions given"):
        load_reward_functions([])
    with pytest.raises(ConfigError, match="listed twice"):
        load_reward_functions([f"{module_file}:n_words", f"{module_file}:n_words=2"])


@pytest.mark.parametrize("function, match", [
    ("too_few", "my_rewards.py:too_few: returned 2 values for 3 completions"),
    ("a_string", "a_string: value at index 1 is 'high' \\(str\\), not a number"),
    ("a_none", "a_none: value at index 2 is None \\(NoneType\\), not a number"),
    ("a_nan", "a_nan: value at index 1 is nan; rewards must be finite"),
    ("an_inf", "an_inf: value at index 2 is -inf; rewards must be finite"),
    ("a_float", "a_float: returned float, expected a list of 3 floats"),
])
def test_bad_outputs_name_the_function_and_index(module_file, function, match):
    fns = load_reward_functions([f"{module_file}:n_words", f"{module_file}:{function}"])
    with pytest.raises(RlhfkitError, match=match):
        fns.score(PROMPTS, RESPONSES)


def test_a_file_is_executed_once_for_several_functions(tmp_path):
    counter = tmp_path / "counted.py"
    counter.write_text("import builtins\nbuiltins.rlhfkit_test_loads = getattr(builtins, 'rlhfkit_test_loads', 0) + 1\n"
                       "def f(p, c):\n    return [1.0] * len(c)\ndef g(p, c):\n    return [2.0] * len(c)\n")
    import builtins

    before = getattr(builtins, "rlhfkit_test_loads", 0)
    fns = load_reward_functions([f"{counter}:f", f"{counter}:g=3"])
    assert builtins.rlhfkit_test_loads == before + 1
    assert fns.score(PROMPTS, RESPONSES) == [7.0, 7.0, 7.0]  # 1 + 3·2


class FakeRM:
    """A reward model's interface: one score per (prompt, response)."""

    def score(self, prompts, responses):
        return [10.0 * i for i in range(len(responses))]


def test_make_reward_rm_only_functions_only_or_both_summed(module_file):
    rm = FakeRM()
    assert make_reward(rm, []) is rm  # an RM alone is used unchanged
    only_fns = make_reward(None, [f"{module_file}:n_words"])
    assert only_fns.score(PROMPTS, RESPONSES) == [2.0, 1.0, 4.0]
    both = make_reward(rm, [f"{module_file}:n_words=0.5"])
    # RM [0, 10, 20] (weight 1) + 0.5·[2, 1, 4] = [1, 10.5, 22]
    assert both.score(PROMPTS, RESPONSES) == [1.0, 10.5, 22.0]
    assert both.components(PROMPTS, RESPONSES) == {"reward_model": [0.0, 10.0, 20.0],
                                                   f"{module_file}:n_words": [2.0, 1.0, 4.0]}
    with pytest.raises(ConfigError, match="config key 'grpo.reward_fn': give a reward model"):
        make_reward(None, [], key="grpo.reward_fn")



COLUMN_MODULE = '''
def exact(prompts, completions, answer):
    return [float(c == a) for c, a in zip(completions, answer)]

def keyword_only(prompts, completions, *, level, unused=7):
    return [float(v) for v in level]

def everything(prompts, completions, **kwargs):
    return [float(sorted(kwargs) == ["answer", "level"])] * len(completions)

def two_args(p, c):  # any names: the first two are positional, never matched to a column
    return [float(len(x)) for x in c]

def wants_tests(prompts, completions, tests):
    return [0.0] * len(completions)
'''
# the prompt rows' other fields, aligned with PROMPTS / RESPONSES
COLUMNS = {"answer": ["hi there", "no", "one two three four"], "level": [1, 2, 3], "c": ["x", "y", "z"]}


@pytest.fixture
def column_file(tmp_path):
    path = tmp_path / "columns.py"
    path.write_text(COLUMN_MODULE)
    return str(path)


def test_each_function_gets_the_columns_it_takes(column_file):
    fns = load_reward_functions([f"{column_file}:{name}" for name in ("exact", "keyword_only", "two_args")])
    parts = fns.components(PROMPTS, RESPONSES, COLUMNS)
    # exact: "hi there" == "hi there", "bye" != "no", "one two three four" equal → [1, 0, 1]
    # keyword_only: its `level` column [1, 2, 3]; two_args: no column (not even `c`), lengths 8, 3, 18
    assert list(parts.values()) == [[1.0, 0.0, 1.0], [1.0, 2.0, 3.0], [8.0, 3.0, 18.0]]
    everything = load_reward_functions([f"{column_file}:everything"])
    two_columns = {"answer": COLUMNS["answer"], "level": [1, 2, 3]}
    assert everything.score(PROMPTS, RESPONSES, two_columns) == [1.0] * 3


def test_a_parameter_no_column_fills_is_a_one_line_error(column_file):
    fns = load_reward_functions([f"{column_file}:wants_tests"])
    message = r"reward fn .*:wants_tests: takes 'tests', which is not a column of the prompts \(columns: "
    with pytest.raises(RlhfkitError, match=message + r"answer, level, c\)") as e:
        fns.score(PROMPTS, RESPONSES, COLUMNS)
    assert "\n" not in str(e.value)
    with pytest.raises(RlhfkitError, match=r"\(columns: none\)"):
        load_reward_functions([f"{column_file}:exact"]).score(PROMPTS, RESPONSES)


def test_score_completions_gives_columns_to_functions_only(column_file):
    from rlhfkit.rewards import score_completions

    both = make_reward(FakeRM(), [f"{column_file}:exact=2"])  # FakeRM.score takes prompts and responses only
    scores, terms = score_completions(both, PROMPTS, RESPONSES, COLUMNS)
    # RM [0, 10, 20] + 2·[1, 0, 1] = [2, 10, 22]
    assert scores == [2.0, 10.0, 22.0]
    assert terms == {"reward_model": [0.0, 10.0, 20.0], f"{column_file}:exact": [1.0, 0.0, 1.0]}
    assert score_completions(FakeRM(), PROMPTS, RESPONSES, COLUMNS) == ([0.0, 10.0, 20.0], {})


def test_functions_given_as_objects_are_used_as_they_are_not_imported():
    """The Python API passes callables by the name config.yaml records (`module:qualname`, a lambda's too)."""
    name = "no_such_module_xyz:make.<locals>.<lambda>"  # imported, this would be a ConfigError
    ones = lambda prompts, completions: [1.0] * len(completions)  # noqa: E731
    fns = make_reward(FakeRM(), [f"{name}=2"], callables={name: ones})
    assert [t.name for t in fns.terms] == ["reward_model", name]
    assert fns.score(PROMPTS, RESPONSES) == [2.0, 12.0, 22.0]  # RM [0, 10, 20] + 2·1
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'"):
        load_reward_functions(["no_such_module_xyz:f"], callables={name: ones})  # another name: imported
