import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(max(1, min(4, torch.get_num_threads())))


@pytest.fixture(scope="session")
def smollm2():
    """The real default target in fp32 (exact-equality tests) — converted from GGUF once per cache dir."""
    from taps_engine import load_target

    return load_target(dtype="fp32")


@pytest.fixture(scope="session")
def tokenizer():
    """The real SmolLM2 tokenizer (chat template included), from the converted default target."""
    from transformers import AutoTokenizer

    from taps_engine.target import DEFAULT_TARGET, resolve_target_path

    return AutoTokenizer.from_pretrained(resolve_target_path(DEFAULT_TARGET))


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """A tiny GSM8K/MATH train data dir and a scratch TAPS_HOME."""
    root = tmp_path / "data"
    for rel, records in {
        "gsm8k/train.jsonl": [{"question": f"Tom has {i} apples and buys {i + 2} more. How many now?",
                               "answer": f"{i} + {i + 2} = {2 * i + 2}.\n#### {2 * i + 2}"} for i in range(6)],
        "math/train.jsonl": [{"problem": f"Solve $x + {i} = {2 * i}$.", "solution": f"$x = \\boxed{{{i}}}$."}
                             for i in range(6)],
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setenv("TAPS_DATA_DIR", str(root))
    monkeypatch.setenv("TAPS_HOME", str(tmp_path / "home"))
    return root
