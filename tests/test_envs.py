"""rlhfkit.envs: the protocol's loading and its one-step environment, the calculator's safe arithmetic, its
tool calls and grading; collate.template_env_turn, the tokens between two policy turns."""

import pytest

from rlhfkit.envs import (
    Calculator,
    CalculatorError,
    SingleTurn,
    evaluate,
    final_answer,
    format_number,
    load_environment,
    parse_env_spec,
)
from rlhfkit.errors import ConfigError, RlhfkitError


@pytest.mark.parametrize("expression, value", [
    ("3*7", 21), ("2 + 3 * 4", 14), ("(2 + 3) * 4", 20), ("7 / 2", 3.5), ("7 // 2", 3), ("-7 % 3", 2),
    ("2 ** 10", 1024), ("-(4 - 10)", 6), ("+5", 5), ("1.5e2 + .5", 150.5), (" 12 ", 12), ("2 ** -1", 0.5),
])
def test_evaluate_computes_arithmetic(expression, value):
    assert evaluate(expression) == value and type(evaluate(expression)) is type(value)


@pytest.mark.parametrize("expression, reason", [
    ("__import__('os').system('true')", "Call is not allowed"),
    ("open('/etc/passwd')", "Call is not allowed"),
    ("x + 1", "Name is not allowed"),
    ("(1).real", "Attribute is not allowed"),
    ("'a' * 3", "Constant is not allowed"),  # a string constant
    ("True + 1", "Constant is not allowed"),  # bool is not a number here
    ("[1, 2]", "List is not allowed"),
    ("1 if 1 else 2", "IfExp is not allowed"),
    ("3 < 4", "Compare is not allowed"),
    ("lambda: 1", "Lambda is not allowed"),
    ("1; 2", "not an arithmetic expression"),
    ("import os", "not an arithmetic expression"),
    ("3 *", "not an arithmetic expression"),
    ("1 / 0", "division by zero"),
    ("5 % 0", "division by zero"),
    ("9 ** 9 ** 9", "exponent 387420489 is over 64"),  # would run for minutes
    ("10 ** 20", "result too large"),
    ("1e400", "result too large"),  # inf
    ("(-8) ** 0.5", "complex result"),
    ("1" * 201, "longer than 200"),
])
def test_evaluate_refuses_what_is_not_safe_arithmetic(expression, reason):
    with pytest.raises(CalculatorError, match=reason):
        evaluate(expression)


def test_format_number_and_final_answer():
    assert [format_number(v) for v in (21, 21.0, 3.5, 1 / 3, -2)] == ["21", "21", "3.5", "0.333333333333", "-2"]
    assert final_answer("so <answer>395</answer>") == 395.0
    assert final_answer("<answer> 1,250.5 </answer>") == 1250.5
    assert final_answer("<answer>1</answer> then <answer>-4</answer>") == -4.0  # the last tag
    assert final_answer("it is 12, no, 13") == 13.0  # untagged: the last number
    assert final_answer("<answer>about 12</answer>") is None  # a tag holds just a number
    assert final_answer("no idea") is None


def test_calculator_answers_a_tool_call_then_grades_the_final_answer():
    env = Calculator()
    messages = env.reset({"prompt": "What is 17 * 23 + 4?", "answer": 395})
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "<calc>" in messages[0]["content"] and messages[1]["content"] == "What is 17 * 23 + 4?"
    observation, reward, done = env.step(messages, "let me compute <calc>17 * 23 + 4</calc>")
    assert (observation, reward, done) == ([{"role": "user", "content": "<result>395</result>"}], 0.0, False)
    observation, reward, done = env.step(messages, "<calc>17 / 0</calc>")
    assert observation[0]["content"] == "<result>error: division by zero</result>" and not done
    observation, reward, done = env.step(messages, "<calc>__import__('os')</calc>")
    assert observation[0]["content"].startswith("<result>error: Call is not allowed") and not done
    assert env.step(messages, "The answer is <answer>395</answer>") == (None, 1.0, True)
    assert env.step(messages, "<answer>394</answer>") == (None, 0.0, True)
    assert env.step(messages, "<calc>1+1</calc> <answer>395</answer>") == (None, 1.0, True)  # answers win
    assert env.step(messages, "I do not know") == (None, 0.0, True)


def test_calculator_keeps_a_prompts_own_system_message_and_checks_the_answer_column():
    env = Calculator()
    system = {"role": "system", "content": "be brief"}
    assert env.reset({"prompt": (system, {"role": "user", "content": "2+2?"}), "answer": "4"})[0] == system
    assert env.step([], "<answer>4</answer>") == (None, 1.0, True)  # "4" (text) graded as a number
    with pytest.raises(RlhfkitError, match="need an 'answer' column"):
        env.reset({"prompt": "2+2?"})
    with pytest.raises(RlhfkitError, match="answer 'four' is not a number"):
        env.reset({"prompt": "2+2?", "answer": "four"})


def test_single_turn_is_the_prompt_then_done():
    env = SingleTurn()
    assert env.reset({"prompt": "hi", "answer": 1}) == [{"role": "user", "content": "hi"}]
    messages = ({"role": "system", "content": "s"}, {"role": "user", "content": "u"})
    assert env.reset({"prompt": messages}) == list(messages)
    assert env.step([], "anything") == (None, 0.0, True)


ENV_FILE = '''
class Ok:
    def reset(self, row):
        return [{"role": "user", "content": row["prompt"]}]

    def step(self, messages, completion):
        return None, 1.0, True


class NoStep:
    def reset(self, row):
        return []


NOT_CALLABLE = 3
'''


def test_load_environment_names_what_is_wrong(tmp_path):
    path = tmp_path / "my_envs.py"
    path.write_text(ENV_FILE)
    assert load_environment("rlhfkit.envs:Calculator") is Calculator
    assert load_environment(f"{path}:Ok")().step([], "") == (None, 1.0, True)
    for spec, message in [
        ("Calculator", "is not module:Name"),
        ("rlhfkit.envs:", "is not module:Name"),
        ("rlhfkit.envs:Calculator=2", "is not module:Name"),
        ("nosuchmodule_xyz:Env", "cannot import module 'nosuchmodule_xyz'"),
        ("rlhfkit.envs:Nope", "has no attribute 'Nope'"),
        (f"{path}:NoStep", "does not make environments"),
        (f"{path}:NOT_CALLABLE", "does not make environments"),
    ]:
        with pytest.raises(ConfigError, match=f"config key 'env': .*{message}"):
            load_environment(spec)
    assert parse_env_spec("a.b:C") == ("a.b", "C")


def test_template_env_turn_renders_what_follows_the_sampled_turn(tiny_llama):
    """The conftest template: `<|im_start|>role content<|im_end|> ` per message. After a sampled EOS the
    text starts after it; after a turn cut at max_new_tokens it closes the turn first; without a template,
    the observations on lines of their own."""
    from rlhfkit.data.collate import template_env_turn
    from rlhfkit.models.load import load_tokenizer

    tok = load_tokenizer(tiny_llama)
    history = [{"role": "user", "content": "the cat"}]
    observation = [{"role": "user", "content": "good dog"}]
    assert template_env_turn(tok, history, observation, True) == (
        " <|im_start|>user good dog<|im_end|> <|im_start|>assistant ")
    assert template_env_turn(tok, history, observation, False) == (
        "<|im_end|> <|im_start|>user good dog<|im_end|> <|im_start|>assistant ")
    assert template_env_turn(tok, history, [], True) == " <|im_start|>assistant "
    assert template_env_turn(tok, history, observation, True, use_chat_template=False) == "\ngood dog\n"
