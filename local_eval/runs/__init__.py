"""An evaluation run: where unlearning() comes from, the 4N jobs, backends, shards."""
