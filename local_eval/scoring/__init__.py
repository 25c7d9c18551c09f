"""The competition's score (pure numpy) and the sanity-check attack."""
