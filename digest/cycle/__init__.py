"""The daily cycle: fetch, diff, match, render and deliver, on a schedule."""
