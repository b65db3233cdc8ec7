#!/usr/bin/env python3
"""Checks real API responses against docs/openapi.yaml.

Usage: check_openapi.py OPENAPI.yaml RESPONSES.json
       check_openapi.py --json OPENAPI.yaml   (prints the document as JSON)

RESPONSES.json is a list of {"method", "path" (the template, e.g.
/v1/batches/{id}), "status", "content_type", "body"} captured from a live
server by the Swift test. The document itself is validated first; then each
response must be declared for its operation and status, with its content
type, and its body must match the declared schema (JSON Schema 2020-12, with
the document's $refs resolved). Prints every mismatch; exits 1 if any.
"""
import json
import sys

import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate


def main():
    if sys.argv[1] == "--json":
        # For the Swift fuzzer, which has no YAML parser.
        with open(sys.argv[2]) as f:
            json.dump(yaml.safe_load(f), sys.stdout)
        return
    spec_path, responses_path = sys.argv[1], sys.argv[2]
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    validate(spec)
    with open(responses_path) as f:
        responses = json.load(f)
    failures = []
    for r in responses:
        where = f'{r["method"]} {r["path"]} → {r["status"]}'
        item = spec["paths"].get(r["path"])
        if item is None:
            failures.append(f"{where}: path not in the document")
            continue
        if "$ref" in item:
            item = resolve(spec, item["$ref"])
        operation = item.get(r["method"].lower())
        if operation is None:
            failures.append(f"{where}: method not in the document")
            continue
        declared = operation["responses"].get(str(r["status"]))
        if declared is None:
            failures.append(f"{where}: status not declared")
            continue
        if "$ref" in declared:
            declared = resolve(spec, declared["$ref"])
        content = declared.get("content")
        if content is None:
            if r["body"]:
                failures.append(f"{where}: a body where none is declared")
            continue
        media = r["content_type"].split(";")[0].strip()
        match = next((c for t, c in content.items() if t.split(";")[0] == media), None)
        if match is None:
            failures.append(f"{where}: content type {media} not declared ({', '.join(content)})")
            continue
        schema = match.get("schema", {})
        if media.endswith("json"):
            body = json.loads(r["body"])
            # The schema is checked from the document's root so its "#/components/..." refs resolve.
            validator = Draft202012Validator(dict(spec, **{"$ref": "#/x-checked", "x-checked": schema}))
            for error in validator.iter_errors(body):
                failures.append(f"{where}: {'/'.join(map(str, error.absolute_path))}: {error.message[:200]}")
    for failure in failures:
        print(failure)
    print(f"{len(responses)} responses checked, {len(failures)} mismatches")
    sys.exit(1 if failures else 0)


def resolve(spec, ref):
    node = spec
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


if __name__ == "__main__":
    main()
