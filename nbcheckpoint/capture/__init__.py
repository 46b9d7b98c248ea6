"""Code that runs inside a checkpointed cell: safe points, snapshot policy and resume plans."""
