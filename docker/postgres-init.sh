#!/bin/sh
# Roles and databases of the lite-rec stack: one login role per application, each owning its
# own database (Dagster's storage, MLflow's backend store); neither is a superuser. Run once by
# the postgres image (docker-entrypoint-initdb.d) and by tests/test_services.py against its own
# cluster. Passwords come from the environment (docker/.env), never from a command line.
set -eu
: "${DAGSTER_DB_PASSWORD:?DAGSTER_DB_PASSWORD is not set: copy docker/env.example to docker/.env and set it}"
: "${MLFLOW_DB_PASSWORD:?MLFLOW_DB_PASSWORD is not set: copy docker/env.example to docker/.env and set it}"
export DAGSTER_DB_USER="${DAGSTER_DB_USER:-dagster}" DAGSTER_DB_NAME="${DAGSTER_DB_NAME:-dagster}"
export MLFLOW_DB_USER="${MLFLOW_DB_USER:-mlflow}" MLFLOW_DB_NAME="${MLFLOW_DB_NAME:-mlflow}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres <<'SQL'
\getenv dagster_user DAGSTER_DB_USER
\getenv dagster_password DAGSTER_DB_PASSWORD
\getenv dagster_db DAGSTER_DB_NAME
\getenv mlflow_user MLFLOW_DB_USER
\getenv mlflow_password MLFLOW_DB_PASSWORD
\getenv mlflow_db MLFLOW_DB_NAME
CREATE ROLE :"dagster_user" LOGIN PASSWORD :'dagster_password';
CREATE DATABASE :"dagster_db" OWNER :"dagster_user";
REVOKE ALL ON DATABASE :"dagster_db" FROM PUBLIC;
CREATE ROLE :"mlflow_user" LOGIN PASSWORD :'mlflow_password';
CREATE DATABASE :"mlflow_db" OWNER :"mlflow_user";
REVOKE ALL ON DATABASE :"mlflow_db" FROM PUBLIC;
SQL
