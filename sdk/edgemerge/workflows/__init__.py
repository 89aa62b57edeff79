"""The workflows the CLI calls: merge files end to end, the budget search, zipper runs."""
