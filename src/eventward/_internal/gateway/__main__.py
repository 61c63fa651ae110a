"""``python -m eventward._internal.gateway``: print the OpenAPI document (how docs/openapi.yaml is made)."""

import sys

from eventward._internal.gateway.openapi import render_yaml

sys.stdout.write(render_yaml())
