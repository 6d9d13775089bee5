"""Distill a teacher into a smaller student."""
