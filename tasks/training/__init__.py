"""Pre-training and fine-tuning on megatron-core: configs, model, data at a lakeFS commit, checkpoints, loop."""
