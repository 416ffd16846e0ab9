"""A value the CLI refuses is said in plain words with the option it was given to: typer
checks values with pydantic, whose wording ("Input should be a valid integer …", "Value
error, …") must not reach the admin. Real CLI (typer's CliRunner), real installation."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from daemon.cli import app
from tests.conftest import ConfigFactory

#: (arguments, what stderr says about the value).
REFUSED = [
    (
        ["outbox", "retry", "abc"],
        "Invalid value for 'item_id': must be a whole number (found: 'abc')",
    ),
    (
        ["outbox", "list", "--limit", "many"],
        "Invalid value for '--limit': must be a whole number (found: 'many')",
    ),
    (
        ["connect", "--timeout", "soon"],
        "Invalid value for '--timeout': must be a number (found: 'soon')",
    ),
    (
        ["orders", "list", "--state", "bogus"],
        "Invalid value for '--state': 'bogus' is not one of 'instructed', 'held', 'retry', "
        "'dropped', 'cancelled', 'reinstruct'.",
    ),
]


@pytest.mark.parametrize(("args", "said"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_a_refused_value_is_said_in_plain_words(
    make_config: ConfigFactory, args: list[str], said: str
) -> None:
    result = CliRunner().invoke(app, ["--config", str(make_config()), *args])
    assert result.exit_code == 2
    assert f"Error: {said}" in result.stderr, result.stderr
    assert "Input should" not in result.output and "Value error" not in result.output


def test_a_refused_value_of_a_json_command_is_plain_in_the_json_too(
    make_config: ConfigFactory,
) -> None:
    result = CliRunner().invoke(
        app, ["--config", str(make_config()), "outbox", "list", "--limit", "many", "--json"]
    )
    assert result.exit_code == 2
    assert json.loads(result.stdout) == {
        "error": "Invalid value for '--limit': must be a whole number (found: 'many')",
        "exit_code": 2,
    }
