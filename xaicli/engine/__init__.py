"""Run engine: decoding inputs, running methods over batches, recording per-image results."""
