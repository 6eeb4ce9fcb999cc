"""Checking relay credentials (``handler.auth``)."""

import hmac

__all__ = ["authorized"]


def authorized(auth, username, password):
    """True if no auth is configured, or the credentials match it.

    Both comparisons always run, in constant time, so the time taken says
    nothing about which part was wrong.
    """
    if auth is None:
        return True
    user_ok = hmac.compare_digest((username or "").encode(), auth.username.encode())
    pass_ok = hmac.compare_digest((password or "").encode(), auth.password.encode())
    return user_ok and pass_ok
