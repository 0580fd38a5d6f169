"""Demo assets: Fashion-MNIST loading and the training script for the shipped demo model."""
