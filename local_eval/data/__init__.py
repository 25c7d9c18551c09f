"""Datasets and forget sets: the first stage of the pipeline."""
