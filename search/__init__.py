"""Search over GLoRA layouts (evolution, random, Optuna) and the end-to-end pipeline."""
