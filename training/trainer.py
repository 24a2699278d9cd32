"""EAGLE-2 and HASS draft-head training on cached target features.

EAGLE-2: head input at t is (feature_t + noise, token_{t+1}); it regresses feature_{t+1} (SmoothL1) and matches
the target's next-token distribution (soft cross-entropy through the frozen LM head).
HASS adds a top-K distillation term and harmonized context alignment: extra passes in which the query at t reads
the head's own previous-pass features for the latest positions while older keys/values stay target-fed, as at
drafting depth j.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import DynamicCache

from taps_engine.fileio import atomic_write, write_json
from taps_engine.head import DraftHead, load_head, save_head, weights_digest
from taps_engine.target import Target

from .config import RunConfig, TrainConfig
from .features import Example, assistant_token_counts, frequent_tokens, load_examples

CHECKPOINT = "checkpoint.pt"


@dataclass
class LossTerms:
    total: torch.Tensor
    parts: dict[str, float] = field(default_factory=dict)


def alignment_mask(length: int, pass_index: int) -> torch.Tensor:
    """Boolean (length, pass_index * length) mask for pass j (1-based) over keys of passes 1..j.

    The query at t sees target-fed keys (pass 1) up to position t-j+1 and, for p = 2..j, the key of pass p at
    position t-(j-p): the positions whose features the head itself produced on the way to depth j.
    """
    t = torch.arange(length)[:, None]
    s = torch.arange(length)[None, :]
    blocks = [s <= t - pass_index + 1]
    blocks += [s == t - (pass_index - p) for p in range(2, pass_index + 1)]
    return torch.cat(blocks, dim=1)


def loss_vocabulary(lm_head: torch.nn.Module, token_ids: torch.Tensor | None) -> torch.nn.Module:
    """The LM head the vocabulary losses read: the target's whole head, or only the rows of the draft vocabulary
    (as EAGLE-3 trains). A head drafts from those rows alone, so the restricted losses teach it the distribution it
    drafts from (the target's, renormalized over the draft vocabulary) at a fraction of the full head's cost."""
    if token_ids is None:
        return lm_head
    weight = lm_head.weight.detach()[token_ids.to(lm_head.weight.device)]
    rows = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    rows.weight = torch.nn.Parameter(weight, requires_grad=False)
    return rows


def _vocab_losses(head_out: torch.Tensor, target_feat: torch.Tensor, lm_head: torch.nn.Module, cfg: TrainConfig,
                  topk_weight: float, soft: tuple[torch.Tensor, torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row: the weighted soft cross-entropy (+ top-K distillation) over `lm_head`'s vocabulary, and the two
    terms alone (detached, for the log); in chunks of rows to bound memory. The soft targets are the target's
    distribution from `target_feat`, or the rows' cached most likely tokens (`soft`: probabilities, indices)."""
    losses, ces, topks = [], [], []
    for a in range(0, head_out.shape[0], cfg.ce_chunk):
        rows = slice(a, a + cfg.ce_chunk)
        logq = torch.log_softmax(lm_head(head_out[rows]).float(), -1)
        if soft is None:
            with torch.no_grad():
                p = torch.softmax(lm_head(target_feat[rows]).float(), -1)
            ce = -(p * logq).sum(-1)
        else:
            p_top, i_top = soft[0][rows], soft[1][rows]
            ce = -(p_top * logq.gather(-1, i_top)).sum(-1)
        loss = cfg.ce_weight * ce
        topk = torch.zeros_like(ce)
        if topk_weight:
            top_p, top_i = p.topk(cfg.topk, dim=-1) if soft is None else (p_top[:, :cfg.topk], i_top[:, :cfg.topk])
            topk = -(top_p * logq.gather(-1, top_i)).sum(-1)
            loss = loss + topk_weight * topk
        losses.append(loss)
        ces.append(ce.detach())
        topks.append(topk.detach())
    if not losses:
        empty = head_out.new_zeros(0)
        return empty, empty, empty
    return torch.cat(losses), torch.cat(ces), torch.cat(topks)


@torch.no_grad()
def with_soft_targets(examples: list[Example], lm_head: torch.nn.Module, k: int, bf16: bool,
                      group_rows: int = 4096) -> list[Example]:
    """`examples` with the target's K most likely tokens at each loss position (`Example.soft_targets`), computed
    once: recomputing the whole distribution costs an LM-head forward per position at every step (the cached
    targets made a draft-vocabulary step 1.13x as fast, results/training/train-step-soft-targets.md). Computed as
    the step computes it (bf16 LM head when training runs in bf16, softmax in fp32), many positions per forward."""
    out: list[Example] = []
    sizes = [int(ex.loss_mask[1:].sum()) for ex in examples]
    start = 0
    while start < len(examples):
        end, rows = start, 0
        while end < len(examples) and (rows < group_rows or end == start):
            rows, end = rows + sizes[end], end + 1
        feats = torch.cat([ex.features[1:][ex.loss_mask[1:]] for ex in examples[start:end]]).float()
        with torch.autocast(feats.device.type, dtype=torch.bfloat16, enabled=bf16):
            probs = torch.softmax(lm_head(feats).float(), -1)
        top_p, top_i = probs.topk(min(k, probs.shape[-1]), dim=-1)
        parts = zip(top_p.split(sizes[start:end]), top_i.split(sizes[start:end]))
        out.extend(replace(ex, soft_targets=pair) for ex, pair in zip(examples[start:end], parts))
        start = end
    return out


def _padded(examples: list[Example], device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids (B, T), fp32 features (B, T, H) and loss mask (B, T), right-padded to the longest: in causal
    attention a real position never reads a padded one, so each row computes what it would alone."""
    width = max(ex.input_ids.shape[0] for ex in examples)
    ids = torch.zeros(len(examples), width, dtype=torch.long)
    feats = torch.zeros(len(examples), width, examples[0].features.shape[-1])
    mask = torch.zeros(len(examples), width, dtype=torch.bool)
    for row, ex in enumerate(examples):
        n = ex.input_ids.shape[0]
        ids[row, :n], feats[row, :n], mask[row, :n] = ex.input_ids, ex.features, ex.loss_mask
    return ids.to(device), feats.to(device), mask.to(device)


def _per_example(values: torch.Tensor, rows: torch.Tensor, n_examples: int) -> torch.Tensor:
    """Mean of `values` per example, where `rows[i]` is the example of `values[i]` (0 for an example with none)."""
    sums = values.new_zeros(n_examples).index_add(0, rows, values)
    counts = torch.bincount(rows, minlength=n_examples).clamp(min=1)
    return sums / counts


def batch_losses(head: DraftHead, embed: torch.nn.Module, lm_head: torch.nn.Module, examples: list[Example],
                 cfg: TrainConfig, passes: int, topk_weight: float, generator: torch.Generator) -> LossTerms:
    """Losses of several sequences from one forward (right-padded rows). The trainer passes one sequence at a
    time: on 2 CPU cores padded forwards were no faster (results/training/train-step-*.md). Each example's loss is
    averaged over its loss positions and the alignment passes; `total` weights them by sequence length, so the
    gradient is the token-weighted mean; `parts` sum the per-example terms (the log averages them over examples)."""
    device = next(head.parameters()).device
    ids, feats, loss_mask = _padded(examples, device)
    n_ex, width = ids.shape
    weight = loss_mask[:, 1:].float()                       # the pair's input token is an assistant token
    targets = feats[:, 1:]
    embeds = embed(ids[:, 1:])
    positions = torch.arange(width - 1, device=device).expand(n_ex, -1)
    loss_positions = [row.nonzero().flatten() for row in loss_mask[:, 1:]]
    chosen = [torch.arange(p.numel(), device=device) for p in loss_positions]   # which of them get vocabulary losses
    if cfg.ce_fraction < 1:
        chosen = [torch.randperm(p.numel(), generator=generator)[:max(1, round(cfg.ce_fraction * p.numel()))]
                  .to(device) if p.numel() else c for p, c in zip(loss_positions, chosen)]
    picked = [p[c] for p, c in zip(loss_positions, chosen)]
    soft = None
    if examples[0].soft_targets is not None:
        soft = tuple(torch.cat([ex.soft_targets[k].to(device)[c] for ex, c in zip(examples, chosen)]) for k in (0, 1))
    rows = torch.cat([torch.full_like(p, i) for i, p in enumerate(picked)])
    flat = torch.cat([p + i * (width - 1) for i, p in enumerate(picked)])
    cache = DynamicCache(config=head.config)
    inputs = feats[:, :-1]
    total = feats.new_zeros(n_ex)
    parts = {"feature": feats.new_zeros(n_ex), "ce": feats.new_zeros(n_ex), "topk": feats.new_zeros(n_ex)}
    for j in range(1, passes + 1):
        noise = (torch.rand(inputs.shape, generator=generator) * 2 - 1).to(device) * cfg.noise
        mask = None if j == 1 else alignment_mask(width - 1, j)[None, None].to(device)
        out = head(embeds, inputs + noise, positions, attention_mask=mask, cache=cache).float()
        feature = F.smooth_l1_loss(out, targets, reduction="none").mean(-1)
        feature = (feature * weight).sum(1) / weight.sum(1).clamp(min=1)
        vocab, ce, topk = _vocab_losses(out.flatten(0, 1)[flat], targets.flatten(0, 1)[flat], lm_head, cfg,
                                        topk_weight, soft)
        total = total + (cfg.feature_weight * feature + _per_example(vocab, rows, n_ex)) / passes
        parts["feature"] += feature.detach() / passes
        parts["ce"] += _per_example(ce, rows, n_ex) / passes
        parts["topk"] += _per_example(topk, rows, n_ex) / passes
        inputs = torch.cat([feats[:, :1], out[:, :-1].detach()], dim=1)  # next pass: own predictions, shifted
    lengths = torch.tensor([ex.input_ids.shape[0] for ex in examples], dtype=torch.float32, device=device)
    return LossTerms((total * lengths).sum() / lengths.sum(),
                     {"loss": float(total.detach().sum()), **{k: float(v.sum()) for k, v in parts.items()}})


@torch.no_grad()
def target_choices(lm_head, examples: list[Example]) -> list[torch.Tensor]:
    """The target's own next token at each loss position: what the held-out agreement compares against, the same
    at every epoch (computing it each time cost a full-vocabulary LM-head pass per epoch)."""
    return [lm_head(ex.features.to(torch.float32)[1:][ex.loss_mask[1:]]).argmax(-1) for ex in examples]


@torch.no_grad()
def heldout_accuracy(head: DraftHead, embed, lm_head, examples: list[Example],
                     expected: list[torch.Tensor]) -> float:
    """Top-1 agreement of lm_head(predicted feature) with the target's own next token (`target_choices`), on loss
    positions."""
    hits = total = 0
    for ex, choices in zip(examples, expected):
        feats = ex.features.to(torch.float32)
        n = ex.input_ids.shape[0] - 1
        out = head(embed(ex.input_ids[1:])[None], feats[:-1][None], torch.arange(n)[None])[0]
        predicted = lm_head(out[ex.loss_mask[1:]]).argmax(-1)
        hits += int((predicted == choices).sum())
        total += choices.numel()
    return hits / total if total else 0.0


def _batches(examples: list[Example], batch_tokens: int, rng: random.Random) -> list[list[Example]]:
    order = examples[:]
    rng.shuffle(order)
    batches, current, size = [], [], 0
    for ex in order:
        current.append(ex)
        size += ex.input_ids.shape[0]
        if size >= batch_tokens:
            batches.append(current)
            current, size = [], 0
    if current:
        batches.append(current)
    return batches


def _schedule(warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


def initial_weights(path: Path, target_name: str, fresh: DraftHead, target: Target) -> dict[str, torch.Tensor]:
    """A trained head's weights to start from; ValueError for a head of another target or shape."""
    config_file = Path(path) / "config.json"
    recorded = json.loads(config_file.read_text()).get("target") if config_file.exists() else None
    if recorded is not None and recorded != target_name:
        raise ValueError(f"init_from {path}: a head for target {recorded!r}, not {target_name!r}")
    state = {k: v for k, v in load_head(path, target.model).state_dict().items() if k != "d2t"}
    shapes = {k: tuple(v.shape) for k, v in fresh.state_dict().items()}
    wrong = [k for k, v in state.items() if shapes.get(k) != tuple(v.shape)]
    if wrong or state.keys() != shapes.keys():
        raise ValueError(f"init_from {path}: its layers do not have this config's shapes ({(wrong or ['keys'])[0]})")
    return state


def is_trained(cfg: RunConfig) -> bool:
    """Whether the config's head has run every epoch of its stages (a parent recipe to reuse, not retrain)."""
    log = cfg.drafter_dir / "train_log.json"
    planned = sum(stage.epochs for stage in cfg.train.stages)
    return log.exists() and len(json.loads(log.read_text()).get("epochs", [])) >= planned


def train(cfg: RunConfig, target: Target, progress: bool = True, data_steps: dict | None = None) -> dict:
    """Train (or resume) the head of `cfg` on its cached features; saves the head after every epoch.
    `data_steps` (what self-distillation and feature caching cost) goes into train_log.json beside the epochs."""
    tc = cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    out_dir = cfg.drafter_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    examples = list(load_examples(cfg.features_dir))
    if len(examples) < 2:
        raise ValueError(f"only {len(examples)} usable examples in {cfg.features_dir}")
    rng = random.Random(tc.seed)
    order = list(range(len(examples)))
    rng.shuffle(order)
    n_held = min(len(examples) - 1, math.ceil(tc.heldout_fraction * len(examples))) if tc.heldout_fraction else 0
    heldout = [examples[i] for i in order[:n_held]]
    train_set = [examples[i] for i in order[n_held:]]

    torch.manual_seed(tc.seed)
    head = DraftHead.for_target(target.model).float().train()
    started_from = None   # the weights it started from, by content when training began: a parent may be replaced later
    if cfg.init_from is not None:
        head.load_state_dict(initial_weights(cfg.start_dir, cfg.target, head, target))
        started_from = {"path": str(cfg.init_from), "weights_sha256": weights_digest(cfg.start_dir)}
    if tc.draft_vocab:
        counts = assistant_token_counts(cfg.features_dir, target.config.vocab_size)
        head.set_draft_vocab(frequent_tokens(counts, tc.draft_vocab))
    embed, lm_head = target.model.get_input_embeddings(), target.model.get_output_embeddings()
    vocab_head = loss_vocabulary(lm_head, head.draft_vocab if tc.ce_vocab == "draft" else None)
    passes = tc.hass_passes if cfg.method == "hass" else 1
    use_bf16 = target.dtype == torch.bfloat16  # fp32 master weights, bf16 compute like the target
    generator = torch.Generator().manual_seed(tc.seed)

    schedule = [(s_i, stage, e) for s_i, stage in enumerate(tc.stages) for e in range(stage.epochs)]
    state_path = out_dir / CHECKPOINT
    log: list[dict] = []
    done = 0
    optimizer = scheduler = resume = None
    if state_path.exists():
        resume = torch.load(state_path, map_location="cpu", weights_only=False)
        head.load_state_dict(resume["head"])
        log, done, started_from = resume["log"], resume["epochs_done"], resume.get("start", started_from)
        generator.set_state(resume["generator"])
    if done >= len(schedule):   # finished before: the held-out tokens and soft targets below would go unused
        return {"drafter": str(out_dir), "epochs": log}
    with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=use_bf16):
        expected = target_choices(lm_head, heldout)
    soft_log = None
    if tc.ce_targets_topk:
        start = time.perf_counter()
        train_set = with_soft_targets(train_set, vocab_head, tc.ce_targets_topk, use_bf16)
        soft_log = {"k": tc.ce_targets_topk, "seconds": round(time.perf_counter() - start, 2)}
    columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TextColumn("loss {task.fields[loss]} · {task.fields[rate]} tok/s"), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress) as bar:
        for epoch_index, (stage_index, stage, epoch) in enumerate(schedule):
            if epoch_index < done:
                continue
            batches = _batches(train_set, tc.batch_tokens, random.Random(tc.seed * 1000 + epoch_index))
            if optimizer is None or epoch == 0:  # a new stage, or the first epoch after a resume
                optimizer = torch.optim.AdamW(head.parameters(), lr=stage.lr, betas=tc.betas,
                                              weight_decay=tc.weight_decay)
                stage_steps = len(batches) * stage.epochs
                scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(tc.warmup_steps, stage_steps))
                if resume is not None and epoch > 0 and resume["stage"] == stage_index:
                    optimizer.load_state_dict(resume["optimizer"])
                    scheduler.load_state_dict(resume["scheduler"])
            task = bar.add_task(f"{cfg.name} stage {stage_index + 1} epoch {epoch + 1}", total=len(batches),
                                loss="-", rate="-")
            start, tokens, sums, count = time.perf_counter(), 0, {"loss": 0.0, "feature": 0.0, "ce": 0.0,
                                                                   "topk": 0.0}, 0
            for batch in batches:
                optimizer.zero_grad(set_to_none=True)
                n_tokens = sum(ex.input_ids.shape[0] for ex in batch)
                for ex in batch:  # one forward each: padded forwards measured no faster on 2 CPU cores (round 12)
                    with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        terms = batch_losses(head, embed, vocab_head, [ex], tc, passes, stage.topk_weight, generator)
                    (terms.total * ex.input_ids.shape[0] / n_tokens).backward()
                    for k, v in terms.parts.items():
                        sums[k] += v
                    count += 1
                torch.nn.utils.clip_grad_norm_(head.parameters(), tc.grad_clip)
                optimizer.step()
                scheduler.step()
                tokens += n_tokens
                bar.update(task, advance=1, loss=f"{sums['loss'] / count:.3f}",
                           rate=f"{tokens / (time.perf_counter() - start):.0f}")
            seconds = time.perf_counter() - start
            head.eval()
            with torch.autocast(target.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                accuracy = heldout_accuracy(head, embed, lm_head, heldout, expected) if heldout else None
            head.train()
            log.append({"stage": stage_index + 1, "epoch": epoch + 1, "lr": stage.lr,
                        **{k: round(v / max(count, 1), 5) for k, v in sums.items()},
                        "heldout_top1": accuracy, "tokens": tokens, "seconds": round(seconds, 2),
                        "tokens_per_s": round(tokens / seconds, 1) if seconds else None})
            save_head(head, out_dir, metadata={"method": cfg.method, "data": cfg.data.kind, "name": cfg.name,
                                               "target": cfg.target})
            state = {"head": head.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "stage": stage_index, "log": log,
                     "epochs_done": epoch_index + 1, "generator": generator.get_state(), "start": started_from}
            atomic_write(state_path, lambda tmp, state=state: torch.save(state, tmp))
            write_json(out_dir / "train_log.json", {"config": json.loads(cfg.model_dump_json()), "epochs": log,
                                                    **({"data_steps": data_steps} if data_steps else {}),
                                                    **({"soft_targets": soft_log} if soft_log else {}),
                                                    **({"start": started_from} if started_from else {})})
    return {"drafter": str(out_dir), "epochs": log}

