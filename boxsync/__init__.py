"""
boxsync: a folder kept in sync between many clients through one server.

The server (``twistd boxsync``) keeps the shared files in the *box*; clients
(``boxsync-client``) keep local folders identical to it over an event stream.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
