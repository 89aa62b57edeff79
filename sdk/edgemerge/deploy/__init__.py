"""Getting a model onto a board: board profiles and cross builds, flashing, C headers for firmware."""
