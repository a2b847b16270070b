"""Several clusters as one: how a service's replicas are split over clusters, and their health."""
