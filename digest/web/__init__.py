"""The web front: sign-up, manage and one-click unsubscribe pages, health and metrics."""
