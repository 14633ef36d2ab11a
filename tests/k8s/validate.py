"""Strict offline validation of Kubernetes objects (what `make test` runs on rendered charts and
injected pods).

    validate.py --kube-version 1.31 --kube-version 1.33 FILE...

Built-in kinds are checked with kubernetes-validate's strict schemas (unknown fields are
errors). The custom resources the chart can render (cert-manager, prometheus-operator) have no
schema there; they are checked against the strict schemas in crd-schemas/, written for the
fields those CRDs define and the chart uses. An object of any other kind is an error: nothing
passes unchecked. Prints one line per failure and a closing count; exit 1 on any failure.
"""
import argparse
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def crd_schema(obj):
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    name = f"{group}_{version}_{obj.get('kind', '')}.json".lower()
    path = os.path.join(HERE, "crd-schemas", name)
    if not group or not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def check(obj, version):
    """None when valid, else a reason."""
    try:
        kubernetes_validate.validate(obj, version, strict=True)
        return None
    except kubernetes_validate.ValidationError as e:
        return f"{'.'.join(str(p) for p in e.path)}: {e.message}"
    except kubernetes_validate.SchemaNotFoundError:
        schema = crd_schema(obj)
        if schema is None:
            return f"no schema for {obj.get('apiVersion')} {obj.get('kind')}"
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
        if errors:
            e = errors[0]
            return f"{'.'.join(str(p) for p in e.path)}: {e.message}"
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kube-version", action="append", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()
    checked = failed = 0
    for name in args.files:
        with open(name) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"ERROR {name}: no objects")
            failed += 1
        for obj in docs:
            meta = obj.get("metadata") or {}
            who = f"{obj.get('kind')}/{meta.get('name') or meta.get('generateName')}"
            for version in args.kube_version:
                checked += 1
                reason = check(obj, version)
                if reason:
                    failed += 1
                    print(f"ERROR {name}: {who} against {version}: {reason}")
    print(f"validate: {checked - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
