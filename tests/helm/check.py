"""Checks of ferry's Helm chart (helm/ferry), offline, with Helm's own Go SDK
(helm-python-sdk), kubernetes-validate, yamllint and hadolint:

  lint        helm lint --strict of the defaults and every ci/*-values.yaml
  schema      values.schema.json: refuses unknown keys everywhere, accepts
              every scenario, refuses each bad value of NEGATIVE naming its path
  kubernetes  every rendered object of every scenario against Kubernetes'
              schemas (strict) for each minor the chart's kubeVersion admits
  invariants  invariants.INVARIANTS on every scenario; each MUTATION (a broken
              copy of the chart) caught; each REFUSAL refused at render
  golden      renders equal tests/helm/golden/<scenario>.yaml
              (--update rewrites them: review the diff)
  yamllint    the chart's non-template YAML and deploy/
  hadolint    deploy/Dockerfile and deploy/Dockerfile.cuda
  runtime-packages FERRY
              deploy/runtime-packages.sh (the images' final stages install
              what it lists) on this build's ferry binary

usage: check.py CHECK [--update | FERRY]
"""
import functools
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import chart  # noqa: E402
import helm_python  # noqa: E402
import invariants  # noqa: E402
import kubernetes_validate.utils as kv  # noqa: E402

GOLDEN_DIR = os.path.join(chart.ROOT, "tests", "helm", "golden")
GOLDEN_KUBE = "v1.35.0"  # the goldens' Kubernetes (image volumes on by default)
# Custom resources: Kubernetes' schemas do not know them; the invariants
# check what the chart puts in them (ports, selectors, query, rules).
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule"),
        ("keda.sh/v1alpha1", "ScaledObject")}

# Bad values, each refused by the schema with its path in the message:
# (what, dotted path, value, the path as Helm's message names it).
NEGATIVE = [
    ("typo at the top", "replicaCont", 2, "additional properties 'replicaCont'"),
    ("typo in ferry", "ferry.slotz", 4, "'/ferry': additional properties 'slotz'"),
    ("typo in a nested object", "model.pvc.existingClam", "m", "'/model/pvc': additional properties 'existingClam'"),
    ("typo in limits", "ferry.limits.maxQeue", 1, "'/ferry/limits': additional properties 'maxQeue'"),
    ("GPU in resources", "resources.limits.nvidia\\.com/gpu", 1, "'/resources/limits'"),
    ("slots as a string", "ferry.slots", "4", "'/ferry/slots'"),
    ("port as a string", "ferry.grpcPort", "50051", "'/ferry/grpcPort'"),
    ("gpu.enabled as a string", "gpu.enabled", "yes", "'/gpu/enabled'"),
    ("extraArgs as a string", "ferry.extraArgs", "--x=1", "'/ferry/extraArgs'"),
    ("port 0", "ferry.metricsPort", 0, "'/ferry/metricsPort'"),
    ("port above 65535", "ferry.grpcPort", 70000, "'/ferry/grpcPort'"),
    ("slots 0", "ferry.slots", 0, "'/ferry/slots'"),
    ("maxLoadSeconds below 10", "model.maxLoadSeconds", 5, "'/model/maxLoadSeconds'"),
    ("root UID", "securityContext.runAsUser", 0, "'/securityContext/runAsUser'"),
    ("KEDA minReplicas 0", "autoscaling.keda.minReplicas", 0, "'/autoscaling/keda/minReplicas'"),
    ("negative drain", "ferry.drainSeconds", -1, "'/ferry/drainSeconds'"),
    ("probe timeout of the startup period", "probes.timeoutSeconds", 10, "'/probes/timeoutSeconds'"),
    ("unknown model source", "model.source", "s3", "'/model/source'"),
    ("unknown kv type", "ferry.kvType", "q8_0", "'/ferry/kvType'"),
    ("unknown access mode", "model.pvc.accessModes", ["ReadWriteSometimes"], "'/model/pvc/accessModes/0'"),
    ("unknown strategy", "strategy.type", "BlueGreen", "'/strategy/type'"),
    ("unknown service type", "service.type", "ExternalName", "'/service/type'"),
    ("unknown pull policy", "image.pullPolicy", "Sometimes", "'/image/pullPolicy'"),
    ("device not cpu/sim/cuda", "ferry.device", "rocm", "'/ferry/device'"),
    ("gpuMemory not a size", "ferry.gpuMemory", "lots", "'/ferry/gpuMemory'"),
    ("model file with ..", "model.file", "../etc/passwd", "'/model/file'"),
    ("bad GPU resource name", "gpu.resourceName", "gpu", "'/gpu/resourceName'"),
    ("extraArgs setting the port", "ferry.extraArgs", ["--port=1"], "'/ferry/extraArgs/0'"),
    ("extraArgs setting the token file", "ferry.extraArgs", ["--auth-token-file=/x"], "'/ferry/extraArgs/0'"),
    ("bad toleration effect", "tolerations", [{"key": "k", "effect": "Never"}], "'/tolerations/0/effect'"),
    ("bad scrape interval", "metrics.serviceMonitor.interval", "15 seconds", "'/metrics/serviceMonitor/interval'"),
]


def admitted_minors(c):
    """The Kubernetes minors Helm installs the chart on, among those
    kubernetes-validate has schemas for (its newest included)."""
    candidates = sorted({v for v in kv.all_versions()}, key=lambda v: tuple(int(x) for x in v.split(".")))
    minors = chart.kube_minors(c, candidates)
    refused_below = [v for v in candidates if v not in minors]
    if not minors or not refused_below:
        raise SystemExit(f"kubeVersion admits {minors} of {candidates}: it is not a range with a lower bound")
    return minors


def scenario_minors(values, minors):
    """Image volumes render only from Kubernetes 1.31 (the chart refuses
    below; REFUSALS checks that)."""
    if values.get("model", {}).get("source") == "image":
        return [m for m in minors if tuple(int(x) for x in m.split(".")[:2]) >= (1, 31)]
    return minors


def report(failures, summary):
    for f in failures:
        print("FAIL:", f)
    print(summary)
    return 1 if failures else 0


def check_lint(c):
    failures = []
    minors = admitted_minors(c)
    scen = chart.scenarios()
    for name, values in scen.items():
        for minor in sorted({scenario_minors(values, minors)[0], minors[-1]}):
            result = helm_python.lint(chart.CHART_DIR, values, strict=True, kube_version="v" + minor)
            for m in result["messages"]:
                line = f"{name} (Kubernetes {minor}): {m['path']}: {m['error']}"
                if m["severity"] >= 2:  # warnings fail under --strict, as do errors
                    failures.append(line)
                elif name == "default" and minor == minors[-1]:
                    print("info:", line)
            failures += [f"{name} (Kubernetes {minor}): {e}" for e in result["errors"]]
    # The same lint fails on a typo: it reads the values, not only the chart.
    typo = helm_python.lint(chart.CHART_DIR, {"ferry": {"slotz": 4}}, strict=True, kube_version="v" + minors[-1])
    if not any(m["severity"] >= 2 for m in typo["messages"]):
        failures.append("helm lint --strict accepted ferry.slotz")
    return report(failures, f"helm lint --strict: {len(scen)} scenarios at their oldest and newest Kubernetes")


def schema_objects(node, path, out):
    """Every object schema under node, with its path."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            out.append((path, node))
        for k, v in node.items():
            schema_objects(v, f"{path}/{k}", out)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            schema_objects(v, f"{path}/{i}", out)
    return out


# Kubernetes' own structures the schema passes through whole; the rendered
# Deployment holding them is validated against Kubernetes' schema instead.
PASS_THROUGH = {"#/properties/affinity/properties/nodeAffinity", "#/properties/affinity/properties/podAffinity",
                "#/properties/affinity/properties/podAntiAffinity"}


def check_schema(c):
    failures = []
    schema = c.schema
    for path, node in schema_objects(schema, "#", []):
        if path in PASS_THROUGH:
            continue
        extra = node.get("additionalProperties")
        if extra is None or extra is True:
            failures.append(f"{path}: an object schema that accepts unknown keys")
    if "additionalProperties" in schema and schema["additionalProperties"] is not False:
        failures.append("the top level accepts unknown keys")
    scen = chart.scenarios()
    for name, values in scen.items():
        try:
            c.validate_schema(c.merge_values(values))
        except helm_python.HelmValuesError as e:
            failures.append(f"scenario {name} refused: {e}")
    for what, dotted, value, expect in NEGATIVE:
        values = chart.set_path({}, dotted.replace("\\.", "\0"), value)
        values = restore_dots(values)
        try:
            c.validate_schema(c.merge_values(values))
            failures.append(f"{what} ({dotted}={value!r}) accepted")
        except helm_python.HelmValuesError as e:
            if expect not in str(e):
                failures.append(f"{what}: the message does not name {expect}: {e}")
            else:
                print(f"refused: {what}: {' '.join(str(e).split())}")
    return report(failures, f"values.schema.json: {len(scen)} scenarios accepted, {len(NEGATIVE)} bad values refused")


def restore_dots(node):
    """set_path splits on dots; keys that hold one were written with \\0."""
    if isinstance(node, dict):
        return {k.replace("\0", "."): restore_dots(v) for k, v in node.items()}
    return node


def check_kubernetes(c):
    # kubernetes-validate re-reads its JSON schema files on every call; they
    # do not change during a run.
    kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)
    failures = []
    minors = admitted_minors(c)
    validated = 0
    skipped = {}
    for name, values in chart.scenarios().items():
        for minor in scenario_minors(values, minors):
            try:
                objs = chart.objects(chart.render(c, values, "v" + minor))
            except helm_python.HelmError as e:
                failures.append(f"{name} (Kubernetes {minor}) does not render: {e}")
                continue
            for o in objs:
                key = (o.get("apiVersion"), o.get("kind"))
                if key in CRDS:
                    skipped[key[1]] = skipped.get(key[1], 0) + 1
                    continue
                try:
                    kv.validate(o, minor, strict=True)
                    validated += 1
                except kv.ValidationError as e:
                    where = "/".join(str(p) for p in e.absolute_path)
                    failures.append(f"{name} (Kubernetes {minor}) {o['kind']} {o['metadata']['name']}: "
                                    f"{where}: {e.message}")
                except kv.SchemaNotFoundError as e:
                    failures.append(f"{name} (Kubernetes {minor}): {e.message} (not a known CRD either)")
    # Strict means strict: an unknown field in a container is refused.
    deployment = next(o for o in chart.objects(chart.render(c, {}, "v" + minors[-1])) if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["slotz"] = 4
    try:
        kv.validate(deployment, minors[-1], strict=True)
        failures.append("kubernetes-validate --strict accepted a container with an unknown field")
    except kv.ValidationError:
        pass
    crds = ", ".join(f"{k} x{n}" for k, n in sorted(skipped.items()))
    return report(failures, f"kubernetes-validate --strict: {validated} objects valid on Kubernetes "
                            f"{minors[0]}..{minors[-1]} ({len(minors)} minors); custom resources left to the "
                            f"invariants: {crds}")


def renders(c, values, minors, chart_dir=chart.CHART_DIR):
    """Renders at the scenario's oldest and newest Kubernetes."""
    ms = scenario_minors(values, minors)
    merged = c.merge_values(values)
    return [(m, invariants.Render("", merged, chart.objects(chart.render(c, values, "v" + m)), chart_dir))
            for m in sorted({ms[0], ms[-1]})]


def check_invariants(c):
    failures = []
    minors = admitted_minors(c)
    scen = chart.scenarios()
    for name, values in scen.items():
        for minor, r in renders(c, values, minors):
            for inv in invariants.INVARIANTS:
                failures += [f"{name} (Kubernetes {minor}) {inv.__name__}: {f}" for f in inv(r)]
    caught = set()
    for inv_name, scenario, mutation in invariants.MUTATIONS:
        inv = getattr(invariants, inv_name)
        with tempfile.TemporaryDirectory() as tmp:
            broken = os.path.join(tmp, "ferry")
            shutil.copytree(chart.CHART_DIR, broken)
            path, old, new = mutation["edit"]
            with open(os.path.join(broken, path)) as f:
                text = f.read()
            if text.count(old) != 1:
                failures.append(f"mutation for {inv_name}: {path} holds {old!r} {text.count(old)} times, not once")
                continue
            with open(os.path.join(broken, path), "w") as f:
                f.write(text.replace(old, new))
            values = scen[scenario]
            for k, v in mutation.get("values", {}).items():
                values = deep_merge(values, {k: v})
            bc = chart.load(broken)
            try:
                found = [f for _, r in renders(bc, values, minors, broken) for f in inv(r)]
            except helm_python.HelmError as e:
                failures.append(f"mutation for {inv_name} ({path}) does not render: {e}")
                continue
            finally:
                bc.close()
        if found:
            caught.add(inv_name)
            print(f"caught: {inv_name} on {scenario} with {path} broken: {found[0]}")
        else:
            failures.append(f"{inv_name} did not notice {path}: {old!r} -> {new!r} ({scenario})")
    untested = [i.__name__ for i in invariants.INVARIANTS if i.__name__ not in caught]
    failures += [f"{n}: no mutation shows it can fail" for n in untested]
    for what, values, words in invariants.REFUSALS:
        try:
            chart.render(c, values, "v" + minors[0])
            failures.append(f"rendered: {what}")
        except helm_python.HelmError as e:
            if words not in str(e):
                failures.append(f"{what}: refused, but not saying {words!r}: {e}")
            else:
                print(f"refused: {what}: {str(e).split(': ', 1)[-1]}")
    return report(failures, f"invariants: {len(invariants.INVARIANTS)} on {len(scen)} scenarios, "
                            f"{len(invariants.MUTATIONS)} broken charts caught, {len(invariants.REFUSALS)} "
                            f"bad combinations refused")


def deep_merge(a, b):
    out = dict(a)
    for k, v in b.items():
        out[k] = deep_merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def golden_text(rendered):
    """The manifests as `helm template` prints them, then NOTES.txt as comments."""
    parts = []
    for path in sorted(rendered):
        text = rendered[path].strip("\n")
        if path.endswith(".yaml") and text.strip():
            parts.append(f"---\n# Source: {path}\n{text}\n")
    notes = rendered.get("ferry/templates/NOTES.txt", "").strip("\n")
    parts.append("# NOTES.txt:\n" + "".join(f"#{' ' if line else ''}{line}\n" for line in notes.split("\n")))
    return "".join(parts)


def check_golden(c, update):
    failures = []
    scen = chart.scenarios()
    os.makedirs(GOLDEN_DIR, exist_ok=True)
    for name, values in scen.items():
        text = golden_text(chart.render(c, values, GOLDEN_KUBE))
        path = os.path.join(GOLDEN_DIR, f"{name}.yaml")
        if update:
            with open(path, "w") as f:
                f.write(text)
            continue
        try:
            with open(path) as f:
                want = f.read()
        except FileNotFoundError:
            want = None
        if want != text:
            failures.append(f"{name}: the render differs from tests/helm/golden/{name}.yaml "
                            f"(if the change is meant: tests/helm/check.py golden --update, and review the diff)")
    stale = {f[:-5] for f in os.listdir(GOLDEN_DIR) if f.endswith(".yaml")} - set(scen)
    failures += [f"tests/helm/golden/{s}.yaml has no scenario" for s in sorted(stale)]
    verb = "rewritten" if update else "equal to their goldens"
    return report(failures, f"golden: {len(scen)} renders (Kubernetes {GOLDEN_KUBE}) {verb}")


def check_yamllint():
    files = [os.path.join(chart.CHART_DIR, p) for p in ("Chart.yaml", "values.yaml", "ci", "files/alerts.yml")]
    files.append(os.path.join(chart.ROOT, "deploy"))
    cmd = [sys.executable, "-m", "yamllint", "--strict", "-c", os.path.join(chart.ROOT, ".yamllint.yaml")] + files
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(r.stdout, end="")
    print(r.stderr, end="", file=sys.stderr)
    return report(["yamllint found problems"] if r.returncode else [],
                  "yamllint --strict: helm/ferry (Chart, values, ci, files) and deploy/")


def check_hadolint():
    hadolint = os.path.join(os.path.dirname(sys.executable), "hadolint")
    files = [os.path.join(chart.ROOT, "deploy", f) for f in ("Dockerfile", "Dockerfile.cuda")]
    cmd = [hadolint, "--config", os.path.join(chart.ROOT, ".hadolint.yaml"), "--no-color"] + files
    r = subprocess.run(cmd, capture_output=True, text=True)
    print(r.stdout, end="")
    print(r.stderr, end="", file=sys.stderr)
    return report(["hadolint found problems"] if r.returncode else [],
                  "hadolint: deploy/Dockerfile, deploy/Dockerfile.cuda")


def check_runtime_packages(binary):
    """The images install what deploy/runtime-packages.sh lists for the
    binary their build made; here it runs on this build's ferry."""
    failures = []
    script = os.path.join(chart.ROOT, "deploy", "runtime-packages.sh")
    r = subprocess.run([script, binary], capture_output=True, text=True)
    packages = r.stdout.split()
    if r.returncode or not packages:
        failures.append(f"runtime-packages.sh failed: {r.stderr.strip()}")
    for p in packages:
        q = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True)
        if q.stdout != "install ok installed":
            failures.append(f"listed {p}, which is not installed here")
    # Each library the loader resolves belongs to a listed package; the
    # gRPC library stands for them in the message.
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    grpc = [line.split()[2] for line in ldd.splitlines() if "libgrpc++.so" in line and "=>" in line]
    owners = {subprocess.run(["dpkg-query", "-S", os.path.realpath(g)], capture_output=True, text=True)
              .stdout.split(":")[0] for g in grpc}
    if not grpc or not owners <= set(packages):
        failures.append(f"gRPC's package {owners} is not among {packages}")
    # A library no package owns (a copy of zlib put first on the loader's
    # path) must stop the image build, not slip through.
    with tempfile.TemporaryDirectory() as tmp:
        zlib = [line.split()[2] for line in ldd.splitlines() if line.strip().startswith("libz.so")]
        if zlib:
            shutil.copy(zlib[0], tmp)
            env = dict(os.environ, LD_LIBRARY_PATH=tmp)
            bad = subprocess.run([script, binary], capture_output=True, text=True, env=env)
            if bad.returncode == 0 or "no package owns" not in bad.stderr:
                failures.append(f"a library no package owns was not refused: {bad.stdout} {bad.stderr}")
        else:
            failures.append("ferry does not load zlib: the refusal case needs another library")
    for name in ("Dockerfile", "Dockerfile.cuda"):
        with open(os.path.join(chart.ROOT, "deploy", name)) as f:
            text = f.read()
        for needed in ("deploy/bootstrap.sh build /build", "/build/runtime-packages.txt", "USER 10001:10001"):
            if needed not in text:
                failures.append(f"deploy/{name} lacks {needed!r}")
    return report(failures, f"runtime packages of {os.path.basename(binary)}: {' '.join(packages)}")


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    what = sys.argv[1]
    if what == "yamllint":
        return check_yamllint()
    if what == "hadolint":
        return check_hadolint()
    if what == "runtime-packages" and len(sys.argv) == 3:
        return check_runtime_packages(sys.argv[2])
    c = chart.load()
    try:
        if what == "lint":
            return check_lint(c)
        if what == "schema":
            return check_schema(c)
        if what == "kubernetes":
            return check_kubernetes(c)
        if what == "invariants":
            return check_invariants(c)
        if what == "golden":
            return check_golden(c, "--update" in sys.argv[2:])
    finally:
        c.close()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
