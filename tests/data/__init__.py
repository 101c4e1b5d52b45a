"""galaxy_model's data: built-in sources, datasets, synthetic galaxies, stamps, shards, prepare."""
