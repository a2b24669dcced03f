# Validates YAML configuration files against rampart's JSON Schema (`rampart schema`) with
# the jsonschema package, reading YAML as rampart and editors do (YAML 1.2 booleans).
# Usage: schema_check.py SCHEMA.json FILE.yaml... (exit 1 when any file has errors).
import json, sys, yaml, jsonschema

class Yaml12(yaml.SafeLoader):
    """YAML 1.2's booleans (true/false only, so `on:` is a key), as rampart reads them."""

Yaml12.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:bool"]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    __import__("re").compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
v = jsonschema.Draft202012Validator(schema)
bad = 0
for f in sys.argv[2:]:
    doc = yaml.load(open(f), Loader=Yaml12)
    for e in v.iter_errors(doc):
        bad += 1
        print(f"{f}: {'.'.join(map(str, e.path))}: {e.message}")
print(f"checked {len(sys.argv) - 2} files, {bad} errors")
sys.exit(1 if bad else 0)
