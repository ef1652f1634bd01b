"""The server's work, without HTTP: projects and keys, blobs and uploads, the catalog.

Services raise the errors of :mod:`benchkit.server.services.errors`; the API layer maps them to
status codes.
"""
