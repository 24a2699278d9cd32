"""Bad input gets a precise ValueError (engine) or a one-line error and exit code 2 (CLI)."""

import pytest
from typer.testing import CliRunner

from taps_engine import Decoder, DraftHead, TreeSettings, make_policy
from taps_engine.cli_root import app
from tiny import tiny_target


@pytest.fixture(scope="module")
def decoder():
    target = tiny_target("llama")
    return Decoder(target, {"a": DraftHead.random(target.model, 1)}, "single", TreeSettings(8, 3, 2))


@pytest.mark.parametrize("kwargs,message", [
    (dict(prompt=""), "prompt is empty"),
    (dict(prompt="   "), "prompt is empty"),
    (dict(prompt=[]), "prompt is empty"),
    (dict(prompt=3.5), "prompt must be a non-empty string"),
    (dict(prompt=[{"role": "user", "content": ""}]), "all messages are empty"),
    (dict(prompt=[{"role": "user"}]), "message 0 needs string 'role' and 'content'"),
    (dict(prompt=[5, 1000]), r"token ids must lie in \[0, 96\)"),
    (dict(max_new_tokens=0), "max_new_tokens must be a positive integer, got 0"),
    (dict(max_new_tokens=-3), "max_new_tokens must be a positive integer"),
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(temperature=float("nan")), "temperature must be >= 0"),
    (dict(top_p=0.0), r"top_p must lie in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must lie in \(0, 1\]"),
    (dict(top_k=-1), "top_k must be an integer >= 0"),
    (dict(drafter="nope"), "unknown drafter 'nope'; available: a"),
    (dict(max_new_tokens=600), "exceeds the target's context of 512 tokens"),
])
def test_generate_rejects_bad_input(decoder, kwargs, message):
    args = {"prompt": [0, 3, 4], **kwargs}
    with pytest.raises(ValueError, match=message):
        decoder.generate(args.pop("prompt"), **args)


def test_unknown_policy_and_bad_tree_settings():
    with pytest.raises(ValueError, match="unknown policy 'best'; choose one of plain, single"):
        make_policy("best")
    with pytest.raises(ValueError, match="total_tokens must be >= 2"):
        TreeSettings(1, 3, 3)
    with pytest.raises(ValueError, match="depth must be >= 1"):
        TreeSettings(8, 0, 3)
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        TreeSettings(8, 3, 0)
    with pytest.raises(ValueError, match="needs at least one drafter"):
        Decoder(tiny_target("llama"), {}, "confidence")


@pytest.mark.parametrize("args,message", [
    (["generate", "hi", "--policy", "best"], "unknown policy 'best'"),
    (["generate", "hi", "--temperature", "-1"], "temperature must be >= 0"),
    (["generate", "hi", "--top-p", "2"], "top_p must lie in"),
    (["generate", "hi", "--max-new-tokens", "0"], "max_new_tokens must be a positive integer"),
    (["generate", "hi", "--total-tokens", "1"], "total_tokens must be >= 2"),
    (["generate", "hi", "--drafter", "nameonly"], "--drafter must look like NAME=PATH"),
    (["generate", "hi", "--drafter", "math=/no/such/head"], "does not exist"),
    (["generate"], "give a PROMPT or --messages FILE"),
    (["generate", "hi", "--target", "/no/such/model.gguf"], "GGUF file not found"),
    (["generate", "hi", "--dtype", "int3"], "unknown dtype 'int3'"),
    (["demo", "--tree", "16/3"], "a tree must look like TOTAL/DEPTH/TOPK"),
])
def test_cli_errors_are_one_clear_line(args, message):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output.replace("\n", " ")
    assert "Traceback" not in result.output


def test_cli_bad_messages_file(tmp_path):
    bad = tmp_path / "m.json"
    bad.write_text("{not json")
    result = CliRunner().invoke(app, ["generate", "--messages", str(bad)])
    assert result.exit_code == 2 and "cannot read messages" in result.output
