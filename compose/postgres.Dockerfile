# PostgreSQL from Debian's own package, for compose.postgres.local.yaml: where the official
# postgres image cannot be pulled, the same server is built on any Debian bookworm image
# (BASE_IMAGE; debian:bookworm-slim by default, or the image digest itself is built on).
# It takes the official image's variables (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD_FILE), data
# directory and uid 999, so compose.postgres.yaml runs either image and a volume moves between them.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
ARG PG_MAJOR=15
# Debian's package makes a cluster of its own on install; create_main_cluster = false keeps it out:
# the cluster is made on the first start, in the volume (postgres-entrypoint.sh).
RUN groupadd --system --gid 999 postgres \
 && useradd --system --uid 999 --gid postgres --home-dir /var/lib/postgresql --shell /bin/bash postgres \
 && apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-common >/dev/null \
 && sed -ri 's/#(create_main_cluster) .*$/\1 = false/' /etc/postgresql-common/createcluster.conf \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "postgresql-${PG_MAJOR}" >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql \
 && chmod 0700 /var/lib/postgresql/data
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
ENV PATH=/usr/lib/postgresql/${PG_MAJOR}/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
# A new named volume takes this directory's owner (999) and mode (0700) from the image.
VOLUME /var/lib/postgresql/data
USER 999:999
EXPOSE 5432
# SIGINT: PostgreSQL's "fast" shutdown (clients disconnected, everything written), as the official image.
STOPSIGNAL SIGINT
ENTRYPOINT ["postgres-entrypoint.sh"]
