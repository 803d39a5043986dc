"""orch: run experiment variants side by side in git worktrees. Never imports torch at module level."""
