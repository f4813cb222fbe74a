# A small SMTP sink for compose.postgres.local.yaml, where Mailpit's image cannot be pulled: Debian's
# aiosmtpd on any Debian bookworm image (BASE_IMAGE), keeping every message it is given in a Maildir:
#   docker compose -f compose.postgres.yaml -f compose.postgres.local.yaml exec mailpit ls /var/mail/sink/new
# (/usr/bin/python3 is Debian's, the one python3-aiosmtpd is for, even on a python:3.x image.)
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-aiosmtpd >/dev/null \
 && apt-get clean && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --user-group --home-dir /var/mail/sink --no-create-home --shell /usr/sbin/nologin sink \
 && install -d -o sink -g sink /var/mail/sink /var/mail/sink/cur /var/mail/sink/new /var/mail/sink/tmp
USER 10002:10002
EXPOSE 1025
# SIGINT: Python stops on it even as PID 1 (which ignores a SIGTERM it has no handler for).
STOPSIGNAL SIGINT
CMD ["/usr/bin/python3", "-m", "aiosmtpd", "--nosetuid", "--listen", "0.0.0.0:1025", "-c", "aiosmtpd.handlers.Mailbox", "/var/mail/sink"]
