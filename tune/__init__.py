"""Ray Tune: hyperparameter search of the char-CNN and of its per-class threshold policy."""
