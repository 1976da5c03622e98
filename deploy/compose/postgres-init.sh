#!/bin/sh
# Creates one role and one database per service on the first start of an empty data volume
# (the postgres image runs /docker-entrypoint-initdb.d/* once). Passwords come from
# DB_PASSWORD_<SERVICE> in the container's environment.
set -eu

create_database() {
    name="$1"
    password="$2"
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
        -v name="$name" -v password="$password" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'password';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create_database auth "$DB_PASSWORD_AUTH"
create_database users "$DB_PASSWORD_USERS"
create_database orders "$DB_PASSWORD_ORDERS"
create_database payments "$DB_PASSWORD_PAYMENTS"
create_database notifications "$DB_PASSWORD_NOTIFICATIONS"
