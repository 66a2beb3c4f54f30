"""Training supernets: the loop, the schemes (sandwich rule, progressive shrinking,
...) and the zoo of shipped checkpoints with the recipes that reproduce them."""
