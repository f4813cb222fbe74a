"""Operations: the command line, the long-running service, status, doctor and backups."""
