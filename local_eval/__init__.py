"""The local evaluator: the competition's score, computed at home, exactly and fast."""
