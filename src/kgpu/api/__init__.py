"""kgpu's resource API: models, validation and YAML/JSON io."""
