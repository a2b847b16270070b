"""Telemetry: a GPU exporter with DCGM-compatible names, Prometheus scrape config and rules, dashboards."""
