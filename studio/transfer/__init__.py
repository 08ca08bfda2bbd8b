"""Move an adapter to another base model (Trans-LoRA). Layer: rank 3 feature room (imports core
and plugins only; the worker child and the CLI/GUI call it).

A transfer is an ordinary run folder on the *target* model, with `transfer.json` (what to move,
from where, with which settings) and `transfer/` (what each stage wrote). The worker child runs
the stages, each resumable from its file, then the ordinary training loop:

  seeds     real task prompts: the source run's evaluation split, a data file, or none (then the
            task description alone)
  generate  the target (or source) base model writes new task prompts from a few seeds at a time
  filter    a discriminator (a logistic probe on the generator's hidden states, cross-fitted:
            no prompt is scored by a probe that saw it) keeps the prompts that look most like the
            real ones, with the reason for every prompt dropped
  teach     the source base + adapter answers the kept prompts (greedy): the training data
  train     a new adapter on the target base learns those answers (sequence-level distillation:
            works across tokenizers) — curves, checkpoints, resume as for any run

    plan.TRANSFER_SCHEMA, plan.check_transfer(...), plan.create_transfer_run(...)
    pipeline.is_transfer_run(run_dir), pipeline.run_transfer(run_dir, emit, control, resume)
"""
