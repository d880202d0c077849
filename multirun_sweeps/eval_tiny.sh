#!/usr/bin/env bash
# Per-example evaluation preset (docs/evaluation.md): sparse_mu/conf/experiment/eval_tiny.yaml.
# Extra arguments are Hydra overrides, e.g. eval.references=8 eval.unlearn_seeds=8
exec python "$(dirname "$0")/../run.py" -m +experiment=eval_tiny "$@"
