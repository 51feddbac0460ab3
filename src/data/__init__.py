"""Synthetic street scenes and dataset resolution/validation."""
