"""Serving: inference engines built into a versioned Triton model repository, deployed with gates."""
