"""Drives this service's Keystone routes with Debian's python3-keystoneclient, unchanged.

Reads one JSON object on stdin: {"endpoint": ".../v3", "auth_token": "...", "steps": [...]},
each step {"op": "validate" | "get_token_data" | "check" | "revoke_token", "token": "...",
"allow_expired": bool}. Prints one JSON object: {"results": [...]}, a result per step, either
{"ok": true, ...what the client returned} or {"ok": false, "error": class, "http_status": N}.
"""

import json
import sys

from keystoneauth1 import adapter, session, token_endpoint
from keystoneauth1 import exceptions as ks_exceptions
from keystoneclient.v3 import client as v3_client


def isotime(value):
    return value.isoformat() if value is not None else None


def run_step(keystone, identity, step):
    op = step["op"]
    token = step["token"]
    allow_expired = bool(step.get("allow_expired", False))
    if op == "validate":
        # what keystonemiddleware does: AccessInfoV3 from GET /v3/auth/tokens
        access = keystone.tokens.validate(token, include_catalog=False, allow_expired=allow_expired)
        return {
            "auth_token": access.auth_token,
            "user_id": access.user_id,
            "username": access.username,
            "user_domain_id": access.user_domain_id,
            "user_domain_name": access.user_domain_name,
            "audit_id": access.audit_id,
            "issued": isotime(access.issued),
            "expires": isotime(access.expires),
            "will_expire_soon": access.will_expire_soon(stale_duration=0),
            "scoped": access.scoped,
        }
    if op == "get_token_data":
        return {"body": keystone.tokens.get_token_data(token, allow_expired=allow_expired)}
    if op == "check":
        # keystoneclient has no HEAD call: the session's adapter sends it, as gateways do
        response = identity.head("/auth/tokens", headers={"X-Subject-Token": token}, raise_exc=False)
        return {
            "http_status": response.status_code,
            "subject_token": response.headers.get("X-Subject-Token"),
            "body": response.text,
        }
    if op == "revoke_token":
        response, _body = keystone.tokens.revoke_token(token)
        return {"http_status": response.status_code}
    raise ValueError("unknown op %r" % op)


def main():
    request = json.load(sys.stdin)
    auth = token_endpoint.Token(request["endpoint"], request["auth_token"])
    sess = session.Session(auth=auth)
    keystone = v3_client.Client(session=sess)
    identity = adapter.Adapter(session=sess, service_type="identity", interface="public")
    results = []
    for step in request["steps"]:
        try:
            results.append(dict(ok=True, **run_step(keystone, identity, step)))
        except ks_exceptions.HttpError as error:
            results.append({"ok": False, "error": type(error).__name__, "http_status": error.http_status, "message": str(error)})
    json.dump({"results": results}, sys.stdout)


if __name__ == "__main__":
    main()
