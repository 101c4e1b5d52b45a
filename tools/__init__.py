"""Maintenance scripts run by hand (python tools/NAME.py), not shipped with the package."""
