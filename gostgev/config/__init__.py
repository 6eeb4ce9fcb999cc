"""The configuration: raw YAML/JSON and GOST command-line URLs, checked and typed."""
