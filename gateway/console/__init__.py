"""The auditor console: the admin listener's JSON API (OpenAPI 3.1), its web UI, and the audit of its users.

Control plane only (Starlette on uvicorn, in the gateway's event loop). It reads the index and the log and
writes nothing but ``ConsoleAccess`` frames through the gateway's recorder.
"""

from gateway.console._auth import Access, Credentials, Role, Unauthenticated
from gateway.console._listener import AdminListener

__all__ = ["Access", "AdminListener", "Credentials", "Role", "Unauthenticated"]
