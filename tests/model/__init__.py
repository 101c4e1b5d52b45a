"""galaxy_model's model on top of the engine: baselines, metrics, figures, the whole pipeline."""
