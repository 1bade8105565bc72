"""Getting releases: the registry of known ones (registry.py), their HTTP transfer with
resume and retries (http.py), and unpacking their archives (archive.py). The fetch stage
(stages/fetch.py) puts these together."""
