"""Causal LMs for the competitions: built from configs, saved and loaded as safetensors only,
checked against a competition's constraints before anything is instantiated."""
