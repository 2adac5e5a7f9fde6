"""The page `dvc plots show` and `dvc plots diff` draw on, built to work with no network (plots/offline.py)."""
