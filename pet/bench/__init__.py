"""What only tools/benchmark_solver.py uses: the benchmark models, harnesses and report."""
