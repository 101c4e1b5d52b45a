"""The scripts in experiments/."""
