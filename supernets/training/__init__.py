"""Training supernets: the loop, the schemes (sandwich rule, progressive shrinking,
...) and the zoo of shipped checkpoints with the recipes that reproduce them; the zoo of
plain models (``_models.py``) trains with the same optimiser and schedule."""
