"""The engine's step times on a GPU for a target whose weights cannot be brought along: the target's architecture
and tokenizer with random weights, and real draft heads.

What a speculative step costs (drafting a tree of fixed size, verifying it, the bookkeeping) does not depend on the
target's weights; what it commits (τ) does, and random weights accept almost nothing. So this reports step times
and per-token plain speed, side by side in one run (`taps_engine.speed.run_speed_bench`); the speed ratio a τ
measured elsewhere with the real weights implies is τ x (plain ms per token / speculative ms per step), left to the
reader, since this run's own τ is not it.

Usage: python benchmarks/gpu_speed.py --arch DIR --drafter math=PATH --drafter chat=PATH --out results/engine/gpu
(DIR: a model directory's config.json and tokenizer files; its weights are not read)
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", type=Path, required=True)
    p.add_argument("--drafter", action="append", required=True, help="NAME=PATH of a draft head (repeatable)")
    p.add_argument("--prompts", type=int, default=3, help="prompts per benchmark")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--layers", type=int, default=None, help="fewer layers than the architecture (smoke runs)")
    p.add_argument("--out", type=Path, required=True, help="report path without suffix (.json and .md written)")
    args = p.parse_args(argv)
    import torch
    import transformers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from taps_engine.drafter_specs import parse_drafter_specs
    from taps_engine.fileio import atomic_write, write_json
    from taps_engine.head import load_head
    from taps_engine.settings import default_device, resolve_dtype
    from taps_engine.policies import policy_spec
    from taps_engine.speed import bench_prompts, report_markdown, run_speed_bench, speed_engines
    from taps_engine.target import from_model
    from taps_engine.tree import default_tree

    device = default_device()
    config = AutoConfig.from_pretrained(args.arch)
    if args.layers:
        config.num_hidden_layers = args.layers
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype("auto", device)).to(device)
    target = from_model(model, AutoTokenizer.from_pretrained(args.arch), name=f"{args.arch.name} (random weights)")
    heads = {name: load_head(path, target.model) for name, path in parse_drafter_specs(args.drafter).items()}
    policies = ["single", "confidence"] if len(heads) > 1 else ["single"]
    engines = speed_engines(target, heads, [policy_spec(p) for p in policies], [default_tree(device)], fallback=False)
    report = run_speed_bench(target, engines, bench_prompts(args.prompts), args.max_new_tokens)
    report.update(torch=torch.__version__, transformers=transformers.__version__,
                  weights="random (seed 0): step times are meaningful, τ and token agreement are not")
    command = "python benchmarks/gpu_speed.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    write_json(args.out.with_suffix(".json"), report)
    markdown = report_markdown(report, command)
    atomic_write(args.out.with_suffix(".md"), lambda tmp: Path(tmp).write_text(markdown))
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
