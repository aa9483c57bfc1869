"""The browser check of the Dagster and MLflow UIs (`python -m tests.browser.ui_check`)."""
