"""Thin Ray shells around the core: runtime set-up, Ray Data reading, Ray Train training.

This is the only part of ``tagging`` that imports Ray.
"""
