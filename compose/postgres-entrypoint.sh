#!/bin/sh
# The first start (an empty $PGDATA) makes the cluster as the official postgres image does with the
# same variables: the superuser $POSTGRES_USER with the password in $POSTGRES_PASSWORD_FILE (a Docker
# secret; never in the environment), and the database $POSTGRES_DB. Then the server runs in the
# foreground, listening on the compose network; every TCP client must give the password.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
user=${POSTGRES_USER:-postgres}
database=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password_file=${POSTGRES_PASSWORD_FILE:-}
  if [ -z "$password_file" ] || [ ! -r "$password_file" ]; then
    echo "postgres: error: POSTGRES_PASSWORD_FILE ('$password_file') is not a file uid $(id -u) can read: mount the password as a secret readable by uid $(id -u) (e.g. chmod 644 it on the host)" >&2
    exit 2
  fi
  initdb -D "$PGDATA" -U "$user" --pwfile="$password_file" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  # Clients come over the compose network, from addresses not known in advance: a password for all.
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  if [ "$database" != postgres ]; then
    # Single-user mode: no server (and no socket) before the database exists.
    printf 'CREATE DATABASE "%s" OWNER "%s"\n' "$database" "$user" | postgres --single -D "$PGDATA" postgres >/dev/null
  fi
  echo "postgres: made the cluster in $PGDATA (user $user, database $database)" >&2
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
