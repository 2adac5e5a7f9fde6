"""The merge gate: its pure rules (verdict) and what it reads from git and DVC (baseline)."""
