"""A plain-return hook: no callback, return the result or raise an error.

Refuses audiences it does not know with InvalidRequestError; logs with print().
"""

ALLOWED_AUDIENCES = ["https://api.example.com"]


def hook(client, scope, audience, context):
    if audience not in ALLOWED_AUDIENCES:
        raise InvalidRequestError("audience " + audience + " is not allowed")
    print("issuing token for", client.get("id"), "at", audience)
    return {"https://example.com/tier": client.get("metadata", {}).get("tier", "free")}
