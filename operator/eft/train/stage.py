"""The train stage: sentence-transformers' trainer with the recipe's InfoNCE settings, resumable checkpoints.

- Loss: InfoNCE with scale = 1/temperature (0.02 -> 50): each query against its positive, its hard negatives and
  every other passage in the batch, computed with GradCache (`CachedMultipleNegativesRankingLoss`) so a global
  batch of 128 queries x 5 passages fits in memory (`miniBatchSize` texts at a time) with the exact same loss.
  `training.matryoshkaDims` (default: the base model's own widths) wraps it in `MatryoshkaLoss`.
- Batches: the positive-aware sampler (`eft.train.sampler`) keeps every labelled positive of a question out of
  its batch as a negative (a multi-hop question's other positives, another question's positive or hard negative
  that is one of its own), and repeated passages and questions out of one batch, so there are no in-batch false
  negatives; hard negatives were mined with all of a question's positives masked.
- Prefixes: the base model's query/passage prefixes are applied through the trainer's `prompts` and saved into
  the output model, so `SentenceTransformer(path)` encodes exactly as trained.
- Precision: bf16 on a GPU that supports it (fp16 otherwise), fp32 on CPU; `precision` overrides.
- Resume: checkpoints every `saveSteps` under `train/checkpoints/`; a killed run started again with the same
  configuration continues from the last one (the stage contract keeps the folder when the config hash matches).
- Multi-GPU/multi-node: run the same command under torchrun; the trainer (accelerate) picks up the distributed
  environment and the global batch is split over WORLD_SIZE.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil

from eft.models import TRAINING_INFO_FILE, embedding_dimension, load_sentence_transformer, matryoshka_dims, prefixes_for
from eft.stages.contract import StageContext
from eft.train.batching import effective_global_batch, per_device_batch, world_size
from eft.train.dataset import load_examples
from eft.train.sampler import PositiveAwareBatchSampler

log = logging.getLogger("eft.train")


def _precision_flags(precision: str) -> dict[str, bool]:
    import torch

    if precision == "fp32" or (precision == "auto" and not torch.cuda.is_available()):
        return {"bf16": False, "fp16": False}
    if precision == "bf16" or (precision == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _progress_callback(task):
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            task.advance(state.global_step - task.done)

    return ProgressCallback()


#: Padded tokens per device step (texts x max passage length) above which the loss is computed with GradCache
#: (bounded memory, one extra forward pass). 32k tokens of a small model fit in a few GB without it.
GRADCACHE_ABOVE_TOKENS = 32768


def make_loss(model, tr, per_device: int, max_length: int, matryoshka: list[int] | None = None, guide=None):
    """InfoNCE over (query, positive, negatives, in-batch), or with `tr.loss == "gist"` GISTEmbedLoss (Solatorio,
    2024) guided by `guide` (the base model). Small steps run the plain loss; larger ones GradCache, which gives
    the same loss and gradients with memory bounded by `miniBatchSize` texts. With `matryoshka` widths the loss
    is wrapped in sentence-transformers' `MatryoshkaLoss` (Kusupati et al., 2022, "Matryoshka Representation
    Learning"): the same loss on the full embedding and on each truncated prefix, equally weighted, so the model
    keeps serving those widths."""
    try:
        from sentence_transformers.sentence_transformer.losses import (CachedGISTEmbedLoss,
                                                                       CachedMultipleNegativesRankingLoss,
                                                                       GISTEmbedLoss, MatryoshkaLoss,
                                                                       MultipleNegativesRankingLoss)
    except ImportError:  # sentence-transformers 5.x
        from sentence_transformers.losses import (CachedGISTEmbedLoss, CachedMultipleNegativesRankingLoss,
                                                  GISTEmbedLoss, MatryoshkaLoss, MultipleNegativesRankingLoss)

    scale = 1.0 / tr.temperature
    small = per_device * (tr.passages_per_query + 1) * max_length <= GRADCACHE_ABOVE_TOKENS
    if tr.loss == "gist":
        # GISTEmbedLoss takes (anchor, positive[, one negative]) only; the cached variant also takes the recipe's
        # several hard negatives per query (same loss, memory bounded by miniBatchSize).
        loss = (GISTEmbedLoss(model, guide, temperature=tr.temperature) if small and tr.passages_per_query <= 2 else
                CachedGISTEmbedLoss(model, guide, temperature=tr.temperature, mini_batch_size=tr.mini_batch_size,
                                    show_progress_bar=False))
    elif small:
        loss = MultipleNegativesRankingLoss(model, scale=scale)
    else:
        loss = CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=tr.mini_batch_size,
                                                  show_progress_bar=False)
    if matryoshka:
        full = embedding_dimension(model)
        loss = MatryoshkaLoss(model, loss, matryoshka_dims=[full, *sorted(matryoshka, reverse=True)])
    return loss


def wise_ft(model, base, weight: float) -> int:
    """WiSE-FT (Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): replace `model`'s floating-point
    weights, in place, by `weight * fine-tuned + (1 - weight) * base`. Returns the number of tensors mixed."""
    import torch

    base_state = base.state_dict()
    mixed = 0
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and name in base_state:
                tensor.mul_(weight).add_(base_state[name].to(tensor.device, tensor.dtype), alpha=1.0 - weight)
                mixed += 1
    return mixed


#: What the Trainer writes last into `checkpoint-N` (transformers' `_save_checkpoint`): without it the folder is
#: a save that was cut short (a killed or preempted pod) and cannot be resumed from.
CHECKPOINT_COMPLETE = "trainer_state.json"


def latest_checkpoint(folder) -> str | None:
    """The newest complete `checkpoint-N` under `folder` (None if none). Incomplete ones, newer than it, are
    removed and logged: resuming from one fails every later run."""
    if not folder.exists():
        return None
    numbered = [p for p in folder.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    for ckpt in sorted(numbered, key=lambda p: int(p.name.split("-")[-1]), reverse=True):
        if (ckpt / CHECKPOINT_COMPLETE).is_file():
            return str(ckpt)
        log.warning("removing %s: its save was cut short (no %s)", ckpt, CHECKPOINT_COMPLETE)
        shutil.rmtree(ckpt, ignore_errors=True)
    return None


def run(ctx: StageContext) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    spec, tr = ctx.spec, ctx.spec.training
    n_neg = min(tr.passages_per_query - 1, spec.prep.negatives_used)
    columns, data_stats, rows = load_examples(ctx.input_dir("prep"), n_neg, tr.seed, spec.prep.split_by)
    n = len(columns["anchor"])
    dataset = Dataset.from_dict(columns)

    model = load_sentence_transformer(spec.base_model, for_training=True)
    prefixes = prefixes_for(spec.base_model, model)
    model.max_seq_length = spec.base_model.max_passage_length
    if tr.gradient_checkpointing:
        model[0].auto_model.gradient_checkpointing_enable()

    global_batch = effective_global_batch(n, tr.global_batch_size, tr.auto_scale_batch)
    per_device, accumulation = per_device_batch(global_batch, world_size())
    prompts = {}
    if prefixes.query:
        prompts["anchor"] = prefixes.query
    if prefixes.passage:
        prompts.update({c: prefixes.passage for c in columns if c != "anchor"})

    ckpt_dir = ctx.out_dir / "checkpoints"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=tr.epochs,
        max_steps=tr.max_steps or -1,
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        learning_rate=tr.learning_rate,
        warmup_steps=tr.warmup_steps,
        weight_decay=tr.weight_decay,
        lr_scheduler_type="linear",
        batch_sampler=functools.partial(PositiveAwareBatchSampler, rows=rows),
        save_strategy="steps",
        save_steps=tr.save_steps,
        save_total_limit=2,
        logging_steps=max(1, min(10, tr.save_steps)),
        seed=tr.seed,
        data_seed=tr.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=_has_cuda(),
        prompts=prompts or None,
        **_precision_flags(tr.precision),
    )
    full_dim = embedding_dimension(model)
    widths = matryoshka_dims(spec.base_model, tr.matryoshka_dims, full_dim)
    guide = load_sentence_transformer(spec.base_model, for_training=True) if tr.loss == "gist" else None
    loss = make_loss(model, tr, per_device, spec.base_model.max_passage_length, widths, guide)
    resume = latest_checkpoint(ckpt_dir)
    if resume:
        log.info("resuming training from %s", resume)
    batches = len(PositiveAwareBatchSampler(dataset, per_device, False, seed=tr.seed, rows=rows))
    steps_per_epoch = -(-batches // (accumulation * world_size()))
    total_steps = tr.max_steps or steps_per_epoch * tr.epochs
    with ctx.progress.task("training steps", total=total_steps) as task:
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss,
                                             callbacks=[_progress_callback(task)])
        # With tqdm off, transformers prints raw log dicts; our progress task and the summary replace them.
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
        result = trainer.train(resume_from_checkpoint=resume)

    mixed = 0
    if tr.wise_ft_weight < 1.0:
        mixed = wise_ft(model, guide or load_sentence_transformer(spec.base_model, for_training=True),
                        tr.wise_ft_weight)
    model.prompts = {"query": prefixes.query, "passage": prefixes.passage, "document": prefixes.passage}
    model.default_prompt_name = None
    final = ctx.out_dir / "model"
    if trainer.is_world_process_zero():
        model.save(str(final))
        info = {"matryoshkaDimensions": [*widths, full_dim], "inferencePrecision": spec.base_model.inference_precision}
        (final / TRAINING_INFO_FILE).write_text(json.dumps(info), encoding="utf-8")
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        **data_stats,
        "epochs": tr.epochs,
        "steps": trainer.state.global_step,
        "resumedFrom": resume.rsplit("-", 1)[-1] if resume else None,
        "globalBatchSize": global_batch,
        "perDeviceBatchSize": per_device,
        "gradientAccumulation": accumulation,
        "worldSize": world_size(),
        "negativesPerExample": n_neg,
        "temperature": tr.temperature,
        "loss": type(loss).__name__,
        "matryoshkaDimensions": [*widths, full_dim] if widths else None,
        "learningRate": tr.learning_rate,
        "wiseFtWeight": tr.wise_ft_weight,
        "wiseFtTensorsMixed": mixed,
        "precision": "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32",
        "firstLoss": round(losses[0], 4) if losses else None,
        "finalLoss": round(losses[-1], 4) if losses else None,
        "trainRuntimeSeconds": round(result.metrics.get("train_runtime", 0.0), 1),
        "model": "train/model",
    }
