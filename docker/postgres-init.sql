-- One Postgres server, two databases: Dagster's storage and MLflow's backend store.
CREATE DATABASE dagster;
CREATE DATABASE mlflow;
