"""Damage detectors, one module each; `pipeline.detect` picks one by name and runs it."""
