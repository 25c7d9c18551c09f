"""The command lines: python -m local_eval [score|leaderboard|prepare|shard|merge]."""
