"""Inference: the one MLX thread (``worker``) and the engines that run on it."""
