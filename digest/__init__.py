"""digest: a self-hosted daily digest of new papers that match each subscriber's own keyword rules."""

__version__ = "0.1.0"
