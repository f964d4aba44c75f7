"""Collaborative (DiLoCo-style) training: codec, assignment, measurement, rating, aggregation."""
