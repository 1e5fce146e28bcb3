"""Renders and checks contrib/kubernetes/ for tests/it/cli/kubernetes.rs, offline.

    kubernetes_render.py render DIR          the manifests of the kustomization in DIR, as JSON
    kubernetes_render.py check DIR K8S_VER   render DIR, validate every manifest (and every
                                             manifest file under contrib/kubernetes/) against
                                             the API schemas of Kubernetes K8S_VER bundled by
                                             kubernetes-validate, and check that the pieces fit

The renderer is a small kustomize: only what contrib/kubernetes uses (resources, components,
namespace, images, configMapGenerator without a hash suffix, patches by path merged the
strategic way for the fields used), and an error on anything else, so it cannot silently
render something else than kustomize would. With `kubectl` on PATH, `check` also compares
with `kubectl kustomize`.
"""

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

KUSTOMIZATION = {"apiVersion", "kind", "resources", "components", "namespace", "images",
                 "configMapGenerator", "patches"}
GENERATOR = {"name", "behavior", "files", "options"}
IMAGE = {"name", "newName", "newTag"}
# Strategic merge: the lists merged by a key (the Kubernetes API's patchMergeKey); any other
# list is replaced whole, as for a plain JSON merge.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name",
              "volumeMounts": "name", "env": "name", "ports": "containerPort"}

# The ServiceMonitor is a CRD (Prometheus Operator), not in the bundled schemas: the part of
# its schema (monitoring.coreos.com/v1) that contrib/kubernetes uses, vendored and strict.
SERVICE_MONITOR = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": {"type": "object", "properties": {
                    "matchLabels": {"type": "object",
                                    "additionalProperties": {"type": "string"}}}},
                "endpoints": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "port": {"type": "string"},
                        "path": {"type": "string"},
                        "interval": {"type": "string", "pattern": "^([0-9]+(ms|s|m|h))+$"},
                        "authorization": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "type": {"type": "string"},
                                "credentials": {
                                    "type": "object",
                                    "required": ["key"],
                                    "additionalProperties": False,
                                    "properties": {"name": {"type": "string"},
                                                   "key": {"type": "string"}}}}}}}}}}}}


def fail(msg):
    sys.exit(f"kubernetes_render.py: {msg}")


def load_all(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization(d, kind):
    k = yaml.safe_load((d / "kustomization.yaml").read_text())
    if k.get("kind", "Kustomization") != kind:
        fail(f"{d}/kustomization.yaml: kind {k.get('kind')}, expected {kind}")
    unknown = set(k) - KUSTOMIZATION
    if unknown:
        fail(f"{d}/kustomization.yaml: fields this renderer does not know: {sorted(unknown)}")
    return k


def find(objs, kind, name):
    return [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]


def build(d, objs=None, kind="Kustomization"):
    """The objects of the kustomization (or, with `objs`, the component) in directory d."""
    k = kustomization(d, kind)
    objs = [] if objs is None else objs
    for r in k.get("resources", []):
        p = (d / r).resolve()
        objs += build(p) if p.is_dir() else load_all(p)
    for c in k.get("components", []):
        build((d / c).resolve(), objs, "Component")
    for g in k.get("configMapGenerator", []):
        generate(d, g, objs)
    for p in k.get("patches", []):
        if set(p) != {"path"}:
            fail(f"{d}: only patches with a path are known: {p}")
        for patch in load_all(d / p["path"]):
            target = find(objs, patch["kind"], patch["metadata"]["name"])
            if len(target) != 1:
                fail(f"{d}/{p['path']}: {len(target)} objects to patch")
            merge(target[0], patch)
    if "namespace" in k:
        for o in objs:
            o["metadata"]["namespace"] = k["namespace"]
    for img in k.get("images", []):
        if set(img) - IMAGE:
            fail(f"{d}: image fields this renderer does not know: {img}")
        set_image(objs, img)
    return objs


def generate(d, g, objs):
    if set(g) - GENERATOR or g.get("options") != {"disableNameSuffixHash": True}:
        fail(f"{d}: only configMapGenerator name/behavior/files without a hash suffix: {g}")
    data = {}
    for f in g["files"]:
        key, _, path = f.rpartition("=") if "=" in f else (Path(f).name, "", f)
        data[key] = (d / path).read_text()
    behavior = g.get("behavior", "create")
    existing = find(objs, "ConfigMap", g["name"])
    if behavior == "create" and not existing:
        objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": g["name"]}, "data": data})
    elif behavior in ("replace", "merge") and len(existing) == 1:
        existing[0]["data"] = data if behavior == "replace" else existing[0]["data"] | data
    else:
        fail(f"{d}: configMapGenerator {g['name']}: {behavior} with {len(existing)} existing")


def merge(target, patch, field=None):
    if isinstance(patch, dict):
        if any(k.startswith("$") for k in patch):
            fail(f"patch directives are not known: {patch}")
        for k, v in patch.items():
            if k in target and isinstance(v, (dict, list)):
                target[k] = merge(target[k], v, k)
            else:
                target[k] = v
        return target
    key = MERGE_KEYS.get(field)
    if key is None:
        return patch
    for item in patch:
        same = [t for t in target if t.get(key) == item[key]]
        if same:
            merge(same[0], item)
        else:
            target.append(item)
    return target


def set_image(objs, img):
    for o in objs:
        spec = o.get("spec", {}).get("template", {}).get("spec", {})
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            name, _, tag = c["image"].partition(":")
            if name == img["name"]:
                c["image"] = f"{img.get('newName', name)}:{img.get('newTag', tag)}"


def ordered(objs):
    return sorted(objs, key=lambda o: (o["kind"], o["metadata"]["name"]))


def validate(objs, version, where):
    problems = []
    for o in objs:
        what = f"{where}: {o['kind']} {o['metadata']['name']}"
        try:
            if o["kind"] == "ServiceMonitor":
                jsonschema.validate(o, SERVICE_MONITOR)
            else:
                kubernetes_validate.validate(o, version, strict=True)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            problems.append(f"{what}: {getattr(e, 'message', e)} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"{what}: {e.message}")
    return problems


def seconds(duration):
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+)(ms|s|m|h)", duration)
    return sum(int(n) * units[u] for n, u in parts)


def fits(objs):
    """That the pieces agree: config, mounts, ports, probes, names."""
    one = {kind: [o for o in objs if o["kind"] == kind] for kind in
           ("Deployment", "Service", "ServiceMonitor", "NetworkPolicy", "HorizontalPodAutoscaler",
            "PodDisruptionBudget")}
    dep, svc = one["Deployment"][0], one["Service"][0]
    pod = dep["spec"]["template"]
    c = pod["spec"]["containers"][0]
    args = c["args"]
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    cfg_path = Path(args[args.index("--config") + 1])
    m = mounts[str(cfg_path.parent)]
    cm = find(objs, "ConfigMap", volumes[m["name"]]["configMap"]["name"])[0]
    cfg = tomllib.loads(cm["data"][cfg_path.name])
    server, ports = cfg["server"], {p["name"]: p["containerPort"] for p in c["ports"]}
    ns = dep["metadata"].get("namespace", "default")
    name = svc["metadata"]["name"]
    problems = []

    def need(ok, msg):
        if not ok:
            problems.append(msg)

    need(all("subPath" not in m for m in c["volumeMounts"]), "a subPath mount never sees updates")
    need(server["listen"] == [f"0.0.0.0:{ports['http']}"], "server.listen is not port http")
    need(cfg["metrics"]["listen"] == f"0.0.0.0:{ports['metrics']}", "[metrics] is not port metrics")
    need(pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"]),
         "prometheus.io/port")
    need(server.get("watch_config") is True, "server.watch_config is off")
    stop = seconds(server.get("shutdown_delay", "0s")) + seconds(server.get("shutdown_timeout",
                                                                            "30s"))
    need(pod["spec"]["terminationGracePeriodSeconds"] > stop,
         f"terminationGracePeriodSeconds is not above shutdown_delay + shutdown_timeout ({stop})")
    for h in (name, f"{name}.{ns}", f"{name}.{ns}.svc", f"{name}.{ns}.svc.cluster.local"):
        need(h in server.get("allowed_hosts", []), f"server.allowed_hosts lacks {h}")
    need(c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}, "readinessProbe")
    need(c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}, "livenessProbe")
    files = [server["client_tokens_file"]] + [
        b["api_key_file"] for b in cfg["backends"].values() if "api_key_file" in b]
    for f in files:
        mount = mounts.get(str(Path(f).parent))
        secret = mount and volumes[mount["name"]].get("secret", {}).get("secretName")
        found = secret and find(objs, "Secret", secret)
        need(found and Path(f).name in found[0]["stringData"], f"{f} is in no mounted Secret")
    labels = pod["metadata"]["labels"]
    for o in [dep] + one["PodDisruptionBudget"] + one["ServiceMonitor"]:
        need(o["spec"]["selector"]["matchLabels"].items() <= labels.items(),
             f"{o['kind']} selector")
    need(svc["spec"]["selector"].items() <= labels.items(), "Service selector")
    need({p["targetPort"] for p in svc["spec"]["ports"]} <= ports.keys(), "Service targetPort")
    for sm in one["ServiceMonitor"]:
        for e in sm["spec"]["endpoints"]:
            need(e["port"] in {p["name"] for p in svc["spec"]["ports"]}, "ServiceMonitor port")
            cred = e["authorization"]["credentials"]
            token = find(objs, "Secret", cred["name"])[0]["stringData"][cred["key"]].strip()
            tokens = find(objs, "Secret", volumes[mounts[str(Path(
                server["client_tokens_file"]).parent)]["name"]]["secret"]["secretName"])[0]
            need(token in tokens["stringData"][Path(server["client_tokens_file"]).name].split(),
                 "the ServiceMonitor's token is no client token")
    ingress = {r["ports"][0]["port"] for r in one["NetworkPolicy"][0]["spec"]["ingress"]}
    need(ingress == set(ports.values()), "NetworkPolicy ports")
    need(one["HorizontalPodAutoscaler"][0]["spec"]["scaleTargetRef"]["name"]
         == dep["metadata"]["name"], "HPA target")
    return problems


def check(d, version):
    objs = ordered(build(d))
    problems = validate(objs, version, d)
    root = Path(__file__).resolve().parent.parent / "contrib" / "kubernetes"
    files = sorted(p for p in root.rglob("*.yaml") if p.name != "kustomization.yaml")
    for f in files:
        if f.parent.name == "example" and f.name in ("hpa.yaml", "resources.yaml"):
            continue  # patches, not whole objects
        problems += validate(load_all(f), version, f.relative_to(root))
    problems += fits(objs)
    kubectl = shutil.which("kubectl")
    if kubectl:
        out = subprocess.run([kubectl, "kustomize", str(d)], capture_output=True, text=True,
                             check=True).stdout
        if ordered(load_all_text(out)) != objs:
            problems.append("kubectl kustomize renders something else")
        print("kubectl kustomize: same")
    else:
        print("kubectl: not on PATH, not compared")
    for p in problems:
        print(p)
    print(f"{len(objs)} manifests, {len(files)} files, Kubernetes {version}: "
          f"{len(problems)} problems")
    return 1 if problems else 0


def load_all_text(text):
    return [d for d in yaml.safe_load_all(text) if d is not None]


def main():
    match sys.argv[1:]:
        case ["render", d]:
            print(json.dumps(ordered(build(Path(d).resolve())), indent=1))
        case ["check", d, version]:
            sys.exit(check(Path(d).resolve(), version))
        case _:
            fail(__doc__)


main()
