"""Models, training recipes and trainers, signals of trained models, the model cache."""
