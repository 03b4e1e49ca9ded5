"""Training: typed config, loop, checkpoints, JSONL metrics, torch.distributed."""
