"""Training: configs, optimizer and schedules, train/eval steps, loop, checkpoints, metrics."""
