"""The documented client-credentials-exchange rule, in Python.

Adds the namespaced claim https://foo.com/claim = "bar" and the scope "extra".
"""


def hook(client, scope, audience, context, cb):
    access_token = {}
    access_token["https://foo.com/claim"] = "bar"
    access_token["scope"] = list(scope or [])
    access_token["scope"].append("extra")
    cb(None, access_token)
