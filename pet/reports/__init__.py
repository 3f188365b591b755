"""What only the explain and plot tools use: per-parameter tables and lr curves."""
