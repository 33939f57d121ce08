"""Search plugins: ARQ and robust-ilp (the baselines HAQ, HAWQ, uniform, random live in baselines/)."""
