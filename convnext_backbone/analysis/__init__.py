"""What a user reaches for after a run: the model's complexity (parameters and FLOPs,
``complexity``) and the training curves of its logs (``curves``)."""
