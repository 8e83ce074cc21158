"""Damage detectors, one module each (`damage_mask` finds a photo's damage); `pipeline.detect`
picks one by name and runs it. `maps` holds what they share.
"""
