"""Tasks: named families of prompts, their domains, reference programs and token sets.

The bottom of the farm: imports nothing of it but `farm.errors`.
"""
