"""Benchmark scripts refuse arguments that cannot work before loading any model."""

import pytest

from taps_engine.bench_cli import parse_prompt_bench, prompt_bench_parser


@pytest.mark.parametrize("argv, message", [(["--prompts", "0"], "must be positive"),
                                           (["--max-new-tokens", "-1"], "must be positive"),
                                           (["--out", "report.md"], "must end in .json")])
def test_a_benchmark_refuses_arguments_that_cannot_work(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_prompt_bench(prompt_bench_parser("Doc.", 5, 128, "results/x.json"), argv)
    assert message in capsys.readouterr().err


def test_a_benchmark_takes_its_defaults():
    args = parse_prompt_bench(prompt_bench_parser("Doc.", 5, 128, "results/x.json"), [])
    assert (args.prompts, args.max_new_tokens, args.out.name) == (5, 128, "x.json")
