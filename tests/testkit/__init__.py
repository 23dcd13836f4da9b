"""Helpers the tests share: stand-in layouts of NVIDIA's images, a hub-protocol server on loopback,
a PostgreSQL server, the tiny sweep's spec and the report page's parser. Imported as
`testkit.<module>` (pyproject's pytest `pythonpath` puts tests/ on the path); not `tests`, which a
dependency (kaleido) already installs at the top of site-packages."""
