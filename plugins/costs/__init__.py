"""Cost-model plugins: bitops and size."""
