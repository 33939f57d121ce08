"""From result files to what a reader sees: leaderboards (``leaderboard``) and figures (``pareto``)."""
