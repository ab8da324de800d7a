"""What a trained model is on disk: checkpoints (safetensors + JSON metadata) and their validation."""
