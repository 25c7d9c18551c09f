"""Report files, plots and the leaderboard of methods."""
