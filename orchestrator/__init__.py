"""orch: run experiment variants side by side in git worktrees.

Never imports torch at module level, so ``orch --help`` and ``orch status`` stay fast.
"""
