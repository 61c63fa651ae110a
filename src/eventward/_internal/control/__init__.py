"""The networked control plane: what services ask for instead of holding a home.

A service in client mode holds its own identity (signing keys, TLS key, certificate) and nothing
else. It asks the control plane (``eventward serve``) for schemas, for data keys it is cleared to
use, for signed trust entries to verify seals offline, and it follows signed notices (forget,
revocation, policy change) so its caches obey erasure. Every answer is authorized by the policy
and audited before it leaves.

    anchor.py    the control plane's statement key: signed trust entries and notices
    plane.py     the answers, over a home-mode Deployment (the only place with KEK access)
    identity.py  a service's own directory: keys, enrollment request, installed grant
    client.py    the HTTP client with fail-over, and the remote seams (keys, schemas, trust)
"""
