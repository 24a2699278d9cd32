"""Offline training of TAPS draft heads: data sets (`training.data`) and, later, the training loop."""
