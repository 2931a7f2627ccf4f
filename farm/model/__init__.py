"""The model and its exact meaning: the torch GPT, exact replay, checkpoints, training,
circuits as edge sets of the model's graph, their torch forward pass and branch traces.

May import `farm.tasks`, `farm.errors` and `farm.atomic`.
"""
