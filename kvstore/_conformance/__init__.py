"""The parts of the conformance suite, :class:`kvstore.testing.StoreConformance` (requires pytest)."""
