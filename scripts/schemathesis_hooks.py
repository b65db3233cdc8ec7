"""Schemathesis hooks for scripts/schemathesis (loaded through SCHEMATHESIS_HOOKS).

Some rules of the API are stated in docs/openapi.yaml in words, since JSON
Schema cannot relate two values: an idempotency key given both as the header
and as options.idempotency_key must be the same key, and a key used again
must come with the same body (and, for a resubmit, the same parent);
backoff.cap must be at least backoff.base (also in a `then` and a
schedule's batch); a
webhook's host must be on the server's allow-list (scripts/schemathesis
starts the server with --http-allow 127.0.0.1). A request that schemathesis
generated as valid (positive) is made to keep them here, right before it is
sent; negative requests are left alone, since the server refuses them
whatever the reason. Sleeps are cut to 100 ms so that a synchronous batch
answers within the run's request timeout.
"""
import hashlib
import json
from urllib.parse import urlsplit, urlunsplit

import schemathesis
from schemathesis import GenerationMode


def keep_backoff(options):
    """backoff.cap at least backoff.base, in a batch's (or then's) options."""
    backoff = options.get("backoff") if isinstance(options, dict) else None
    if isinstance(backoff, dict) and {"base", "cap"} <= backoff.keys() and backoff["cap"] < backoff["base"]:
        backoff["base"], backoff["cap"] = backoff["cap"], backoff["base"]


def keep_batch_rules(batch):
    """The rules of a batch body (POST /v1/batches, a schedule's batch), its then included."""
    keep_backoff(batch.get("options"))
    if isinstance(batch.get("then"), dict):
        keep_backoff(batch["then"].get("options"))


def key_headers(case, payload):
    """The Idempotency-Key headers of the case set to the digest of `payload`.

    The digest keeps the payload's key order: the server compares a key's
    request bodies byte for byte, so the same fields in another order are
    another body and need another key."""
    headers = case.headers or {}
    names = [name for name in headers if name.lower() == "idempotency-key"]
    key = hashlib.sha256(json.dumps(payload, default=lambda _: None).encode()).hexdigest()
    for name in names:
        headers[name] = key
    return names, key


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    route = (case.method.upper(), case.path)
    body = case.body if isinstance(case.body, dict) else None
    if route == ("POST", "/v1/batches") and body is not None:
        context = body.get("context")
        if isinstance(context, dict) and isinstance(context.get("ms"), (int, float)) and context["ms"] > 100:
            context["ms"] = 100
        for item in body.get("items") or []:
            if isinstance(item, dict) and isinstance(item.get("ms"), (int, float)) and item["ms"] > 100:
                item["ms"] = 100
        keep_batch_rules(body)
        options = body.get("options")
        # One key per body: the digest of the body without its key.
        if isinstance(options, dict) and "idempotency_key" in options:
            options["idempotency_key"] = None
        names, key = key_headers(case, body)
        if isinstance(options, dict) and "idempotency_key" in options and (names or options.get("idempotency_key") is None):
            options["idempotency_key"] = key
    if route == ("POST", "/v1/schedules") and body is not None and isinstance(body.get("batch"), dict):
        # A schedule's batch keeps the batch's rules; its runs sleep little.
        batch = body["batch"]
        context = batch.get("context")
        if isinstance(context, dict) and isinstance(context.get("ms"), (int, float)) and context["ms"] > 100:
            context["ms"] = 100
        keep_batch_rules(batch)
    if route == ("POST", "/v1/batches/{id}/resubmit"):
        # One key per parent and body.
        key_headers(case, {"id": (case.path_parameters or {}).get("id"), "body": case.body})
    if route == ("POST", "/v1/webhooks") and body is not None and isinstance(body.get("url"), str):
        parts = urlsplit(body["url"])
        port = f":{parts.port}" if parts.port else ""
        body["url"] = urlunsplit((parts.scheme, "127.0.0.1" + port, parts.path, parts.query, parts.fragment))
