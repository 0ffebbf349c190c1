"""Training: methods, NEFTune, the trained-tokens-only loss, the Trainer, and the run that wires them."""
