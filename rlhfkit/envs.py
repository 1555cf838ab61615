"""Environments for multi-turn rollouts: the protocol (`reset`, `step`), the one-step environment every run
without `--env` goes through, and a worked tool environment (`Calculator`, with ast-based arithmetic).

The protocol. One environment object holds one episode; `--env module:Name` (or `path/file.py:Name`) names a
class, or any callable, that makes a fresh one when called with no arguments, once per episode:

    reset(row) -> messages
        the initial chat messages [{"role": ..., "content": ...}] for one prompt row: row["prompt"] is the
        prompt (text or messages, from the `--prompt-field` column), the other keys are the row's columns
        (e.g. the `answer` a grader checks)
    step(messages, completion) -> (observation, reward, done)
        after each policy turn: `messages` is the conversation so far (reset's messages, then the earlier
        assistant turns and observations), `completion` the policy's new assistant text (decoded, EOS
        dropped); `observation` is a list of messages the environment answers with (a tool result as a
        user message, say) or None, `reward` a float, `done` True ends the episode

`rlhfkit.rollout.run_episodes` plays the episodes of a batch together: each turn, every episode still running
samples its next assistant message in one batched sampler call, its environment steps, and episodes that are
done drop out, for at most `--max-turns` policy turns (an observation after the last turn is not shown). The
episode's score is the sum of its step rewards plus the reward model and `--reward-fn` functions on its last
assistant message (`rlhfkit.rollout.sample_and_score`). What trains: the initial messages are the query; the
rest of the conversation is the "response", and only the policy's own sampled tokens count (mask 1); the
observations and the chat-template tokens around them are context (mask 0: no log-prob, KL, loss or
entropy). A run without `--env` plays `SingleTurn`: one completion, done at once, reward 0, so the reward
model and functions give the whole score, as single-turn RL does.

Example, an environment that asks once more when the first answer is wrong:

    class SecondChance:
        def reset(self, row):
            self.answer = str(row["answer"])
            return [{"role": "user", "content": row["prompt"]}]

        def step(self, messages, completion):
            if self.answer in completion:
                return None, 1.0, True
            if len(messages) == 1:  # the first answer: one more try
                return [{"role": "user", "content": "Not quite. Check and answer again."}], 0.0, False
            return None, 0.0, True

`rlhfkit grpo --env my_envs.py:SecondChance --max-turns 2 --prompts rows.jsonl ...` trains on it.
No torch here: config loading imports `parse_env_spec` to check `--env` before any work starts.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Protocol

from rlhfkit.errors import ConfigError, RlhfkitError

Message = dict  # {"role": str, "content": str}


class Environment(Protocol):
    """One episode's environment (see the module docstring)."""

    def reset(self, row: dict) -> list[Message]: ...

    def step(self, messages: list[Message], completion: str) -> tuple[list[Message] | None, float, bool]: ...


def prompt_messages(prompt) -> list[Message]:
    """A prompt (text or messages) as chat messages: a text prompt is one user turn."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [dict(message) for message in prompt]


class SingleTurn:
    """The one-step environment of every run without --env: the prompt as it is, one completion, done at
    once with reward 0 (the reward model and --reward-fn functions score that completion)."""

    def reset(self, row: dict) -> list[Message]:
        return prompt_messages(row["prompt"])

    def step(self, messages: list[Message], completion: str) -> tuple[None, float, bool]:
        return None, 0.0, True


def parse_env_spec(spec: str, key: str = "env") -> tuple[str, str]:
    """`module:Name` or `path/file.py:Name` -> (module, name); ConfigError naming `key` otherwise. Imports
    nothing, so a config can be checked at load time."""
    module, sep, name = spec.rpartition(":")
    if not sep or not module or not all(part.isidentifier() for part in name.split(".")):
        raise ConfigError(f"config key {key!r}: {spec!r} is not module:Name (e.g. rlhfkit.envs:Calculator or "
                          "path/to/file.py:MyEnv, a class whose instances have reset(row) and "
                          "step(messages, completion))")
    return module, name


def load_environment(spec: str, key: str = "env") -> Callable[[], Environment]:
    """The factory `spec` names (a class, or a callable returning an environment), checked by making one.

    Raises:
        ConfigError: a bad spec, a module that cannot be imported, a missing attribute, or an object whose
            instances lack `reset` or `step`; it names `key`.
    """
    from rlhfkit.rewards import import_object

    module, name = parse_env_spec(spec, key)
    factory = import_object(module, name, key)
    probe = factory() if callable(factory) else None
    if not all(callable(getattr(probe, method, None)) for method in ("reset", "step")):
        raise ConfigError(f"config key {key!r}: {spec!r} does not make environments: calling it must return "
                          "an object with reset(row) and step(messages, completion)")
    return factory


# --------------------------------------------------------------------------- the calculator tool

CALL = re.compile(r"<calc>(.*?)</calc>", re.S)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.S)
NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")

# Bounds that keep one call cheap whatever the policy writes (`9**9**9` would otherwise run for minutes)
MAX_EXPRESSION_CHARS = 200
MAX_EXPONENT = 64  # |b| of a ** b
MAX_MAGNITUDE = 1e15  # every constant and intermediate value

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class CalculatorError(ValueError):
    """An expression the calculator refuses or cannot compute; its message goes back to the policy."""


def evaluate(expression: str) -> int | float:
    """The value of an arithmetic expression: numbers, + - * / // % **, unary +/- and parentheses, walked
    over its syntax tree (never `eval`): names, calls, attributes, strings and everything else are refused.

    Raises:
        CalculatorError: too long, not arithmetic, a refused construct, division by zero, an exponent over
            MAX_EXPONENT, a complex result, or a value beyond MAX_MAGNITUDE.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CalculatorError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except (SyntaxError, ValueError):  # ValueError: a NUL byte
        raise CalculatorError("not an arithmetic expression") from None
    return _evaluate(tree.body)


def _evaluate(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # bool is not a number here
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_evaluate(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise CalculatorError(f"exponent {right} is over {MAX_EXPONENT}")
        try:
            value = _BINARY[type(node.op)](left, right)
        except ZeroDivisionError:
            raise CalculatorError("division by zero") from None
        except OverflowError:
            raise CalculatorError("result too large") from None
        if isinstance(value, complex):  # (-8) ** 0.5
            raise CalculatorError("complex result")
        return _bounded(value)
    raise CalculatorError(f"{type(node).__name__} is not allowed: only numbers, + - * / // % ** and "
                          "parentheses")


def _bounded(value: int | float) -> int | float:
    if not abs(value) <= MAX_MAGNITUDE:  # also nan
        raise CalculatorError("result too large")
    return value


def format_number(value: int | float) -> str:
    """21 -> "21", 21.0 -> "21", 3.5 -> "3.5", 1/3 -> "0.333333333333" (12 significant digits)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if isinstance(value, int) else f"{value:.12g}"


def final_answer(completion: str) -> float | None:
    """The number a completion answers with: the last <answer>...</answer> (a number, commas allowed), else
    the last number in the text; None when there is none."""
    tagged = ANSWER.findall(completion)
    text = tagged[-1] if tagged else completion
    numbers = NUMBER.findall(text.replace(",", ""))
    if not numbers or (tagged and numbers[0] != text.replace(",", "").strip()):
        return None  # an <answer> must hold just a number
    return float(numbers[-1])


class Calculator:
    """A calculator tool. reset: the instructions (a system message, unless the prompt has one) and the
    prompt. Each step: a completion with <calc>expression</calc> and no <answer> is a tool call, answered by
    the next user message <result>value</result> (or <result>error: ...</result>), reward 0; any other
    completion is the final answer, graded against the row's `answer` (1.0 when the numbers agree to 1e-9,
    else 0.0), done. The arithmetic is `evaluate`'s: an ast walk, never eval. Run it with e.g.
    `rlhfkit grpo --env rlhfkit.envs:Calculator --prompts rows.jsonl --max-turns 3` on rows such as
    {"prompt": "What is 17 * 23 + 4?", "answer": 395}."""

    instructions = ("Solve the problem. You may use a calculator: write <calc>expression</calc> (numbers, "
                    "+ - * / // % ** and parentheses) and its value comes back as <result>value</result>. "
                    "Give the final answer as <answer>number</answer>.")
    result_role = "user"  # the role of the result message (a template with a `tool` role may use that)

    def reset(self, row: dict) -> list[Message]:
        if "answer" not in row:
            raise RlhfkitError("env Calculator: the prompt rows need an 'answer' column (the number the final "
                               f"answer is graded against); this row has {', '.join(map(repr, row))}")
        try:
            self.answer = float(str(row["answer"]).replace(",", ""))
        except ValueError:
            raise RlhfkitError(f"env Calculator: answer {row['answer']!r} is not a number") from None
        messages = prompt_messages(row["prompt"])
        if messages[0]["role"] != "system":
            messages.insert(0, {"role": "system", "content": self.instructions})
        return messages

    def step(self, messages: list[Message], completion: str) -> tuple[list[Message] | None, float, bool]:
        call = CALL.search(completion)
        if call is not None and not ANSWER.search(completion):
            try:
                result = format_number(evaluate(call.group(1)))
            except CalculatorError as e:
                result = f"error: {e}"
            return [{"role": self.result_role, "content": f"<result>{result}</result>"}], 0.0, False
        answer = final_answer(completion)
        correct = answer is not None and math.isclose(answer, self.answer, rel_tol=1e-9, abs_tol=1e-9)
        return None, float(correct), True
