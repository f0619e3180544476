"""Training: Detectron's solver (schedule, SGD), checkpoints and the distributed loop."""
