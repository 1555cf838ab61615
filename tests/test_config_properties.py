"""Property-based tests of config loading: whatever the keys, values or YAML file, each command either gets a
valid config or one one-line ConfigError naming a key; through the CLI, a non-zero exit, no traceback and
nothing written."""

import re

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhfkit import config_loading
from rlhfkit.cli import COMMANDS, main
from rlhfkit.config import build
from rlhfkit.errors import ConfigError

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
NAMED_KEY = re.compile(r"config key (['\"])(.+?)\1")


def _keys(cls) -> list[str]:
    """Every name a key may be spelled with: dotted leaves, unique short names, aliases, groups."""
    leaves = [k for k, _, _ in config_loading._leaf_fields(cls)]
    return leaves + list(config_loading._short_names(cls)) + list(config_loading._aliases(cls)) + sorted(
        config_loading._group_keys(cls))


def _required(cls) -> dict:
    """Values that satisfy a command's own required keys (and eval's --policy), so valid configs occur."""
    values = {f.name: "x" for f in cls.__dataclass_fields__.values() if f.metadata.get("required")}
    return values | ({"policy": ["sft=x"]} if "policy" in values or cls.__name__ == "EvalConfig" else {})


scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.integers(-3, 70),
                    st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1), st.text(max_size=8),
                    st.sampled_from(["true", "no", "1e-4", "3", "0.5", "fp32", "bf16", "ipo", "sigmoid"]))
values = st.one_of(scalars, st.lists(scalars, max_size=3), st.dictionaries(st.text(max_size=4), scalars,
                                                                             max_size=2))


def _overrides(cls):
    known = st.sampled_from(_keys(cls))
    unknown = st.text(min_size=1, max_size=12)
    keys = st.one_of(known, known, known, unknown)
    return st.fixed_dictionaries({"base": st.booleans(), "extra": st.dictionaries(keys, values, max_size=4)})


def _check_error(cls, error: ConfigError, given_keys) -> None:
    """One line that names, quoted as Python would, a key of the command or a key the user gave."""
    message = str(error)
    assert "\n" not in message, message
    assert NAMED_KEY.search(message), message
    assert any(f"config key {k!r}" in message for k in {*_keys(cls), *map(str, given_keys)}), message


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_any_overrides_give_a_config_or_a_one_line_error_naming_a_key(command):
    cls = COMMANDS[command][0]

    @SETTINGS
    @given(_overrides(cls))
    def check(drawn):
        overrides = {**(_required(cls) if drawn["base"] else {}), **drawn["extra"]}
        try:
            cfg = build(cls, overrides)
        except ConfigError as e:
            _check_error(cls, e, overrides)
        else:
            assert isinstance(cfg, cls)

    check()


yaml_documents = st.one_of(
    st.dictionaries(st.text(max_size=12), values, max_size=5),
    st.recursive(values, lambda inner: st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6),
    st.text(max_size=40),
    st.binary(max_size=40),
)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_any_yaml_file_through_the_cli_exits_cleanly_and_writes_nothing(command, tmp_path, monkeypatch, capsys):
    cls = COMMANDS[command][0]
    ran = []
    monkeypatch.setitem(COMMANDS, command, (cls, ran.append, command))  # a valid config would start the work

    @SETTINGS
    @given(yaml_documents, st.booleans(), st.booleans())
    def check(document, with_required, known_keys_too):
        if isinstance(document, dict) and known_keys_too:
            document = {**document, **dict.fromkeys(_keys(cls)[:2], "1")}
        if isinstance(document, dict) and with_required:
            document = {**_required(cls), **document}
        cfg_file = tmp_path / "config.yaml"
        if isinstance(document, bytes):
            cfg_file.write_bytes(document)
        else:
            cfg_file.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
        ran.clear()
        capsys.readouterr()
        status = main([command, "--config", str(cfg_file)])
        err = capsys.readouterr().err
        assert "Traceback" not in err
        if status == 0:
            assert len(ran) == 1 and isinstance(ran[0], cls)
        else:
            assert status == 2 and not ran
            assert err.startswith(f"rlhfkit {command}: error: ") and err.count("\n") == 1, err
        assert [p.name for p in tmp_path.iterdir()] == ["config.yaml"]  # loading wrote nothing

    check()


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_any_flag_values_through_the_cli_exit_cleanly(command, tmp_path, monkeypatch, capsys):
    cls = COMMANDS[command][0]
    ran = []
    monkeypatch.setitem(COMMANDS, command, (cls, ran.append, command))
    flags = [f"--{k.replace('_', '-')}" for k, _, _ in config_loading._leaf_fields(cls)]
    words = st.one_of(st.text(max_size=6).filter(lambda w: not w.startswith("-")),
                      st.sampled_from(["0", "-1", "3", "2.5", "nan", "inf", "1e-4", "true"]))

    @SETTINGS
    @given(st.lists(st.tuples(st.sampled_from(flags), words), max_size=4))
    def check(pairs):
        argv = [command, *[f"--{k}={v}" for k, v in _required(cls).items() if not isinstance(v, list)]]
        argv += ["--policy=sft=x"] if "policy" in _required(cls) else []
        argv += [f"{flag}={word}" for flag, word in pairs]
        ran.clear()
        capsys.readouterr()
        try:
            status = main(argv)
        except SystemExit as e:  # argparse: an unknown choice or a value given to a switch
            status = e.code
        err = capsys.readouterr().err
        assert "Traceback" not in err
        assert status in (0, 2) and (status == 0) == bool(ran), (argv, err)
        assert list(tmp_path.iterdir()) == []

    check()
