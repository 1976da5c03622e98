#!/bin/sh
# The default user from RABBITMQ_DEFAULT_USER/RABBITMQ_DEFAULT_PASS, as the rabbitmq image does.
set -eu
cat >"$RABBITMQ_CONFIG_FILE" <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
CONF
exec "$@"
