"""YAML config files validated by pydantic, with errors that name the file and the field (one loader for all)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


class Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must not silently fall back to a default."""

    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: invalid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return raw


def validate(model: type[M], raw: dict, origin: str | Path) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        raise ValueError(f"{origin}: {describe(e)}") from e


def describe(error: ValidationError) -> str:
    """Every problem as `field.path: message` on one line (our own checks' messages without pydantic's prefix)."""
    return "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg'].removeprefix('Value error, ')}"
                     for err in error.errors())


def load_yaml_config(path: str | Path, model: type[M]) -> M:
    return validate(model, read_yaml(path), path)
