"""Hardware targets: each one's cost formulas, constants and refine rules together."""
