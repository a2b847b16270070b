"""GPU facts (the catalog, MIG geometry) and device discovery."""
