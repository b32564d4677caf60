"""Training: run configuration, run setup (task, data, backbone), the loop, checkpoints."""
