"""Per-layer op counting, energy models and power meters."""
