"""Matching: the rule language, the word index over a day's papers, and why a paper matched."""
