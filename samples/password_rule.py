"""The documented password-exchange rule, in Python.

Adds the namespaced claim https://foo.com/claim = "bar" and the scope "extra".
The hook receives the user first; the 5-parameter form without `user` works too.
"""


def hook(user, client, scope, audience, context, cb):
    access_token = {}
    access_token["https://foo.com/claim"] = "bar"
    access_token["scope"] = list(scope or [])
    access_token["scope"].append("extra")
    cb(None, access_token)
