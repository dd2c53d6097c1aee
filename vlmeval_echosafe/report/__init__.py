"""Report tooling for MM-SafetyBench++ results: leaderboard + figures + HTML (``cli``), judge agreement
(``agree``), judge cost estimate (``cost``) and re-judging existing predictions (``rejudge``).

Everything reads the files evaluation already wrote; nothing here runs a model.
"""
