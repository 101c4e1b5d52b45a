"""galaxy_model on survey images: cutouts, inverse variance and masks, Sersic fits."""
