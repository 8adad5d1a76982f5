"""What must hold in every render of ferry's chart, whatever the values.

Each invariant takes a Render and returns its failures (strings naming the
object and what is wrong); none means it holds. check.py runs them on every
scenario, and also on renders of deliberately broken copies of the chart
(MUTATIONS), where each must fail: a check that cannot fail checks nothing.
"""
import math
import os
import re

import yaml

import chart

STANDARD_RESOURCES = {"cpu", "memory", "ephemeral-storage"}
SECRET_FLAGS = ("tls_cert", "tls_key", "tls_client_ca", "tls_ca", "auth_token_file")


class Render:
    def __init__(self, scenario, values, objects, chart_dir=chart.CHART_DIR):
        self.scenario = scenario
        self.values = values  # merged: the chart's defaults and the scenario's
        self.objects = objects
        self.chart_dir = chart_dir

    def of_kind(self, kind):
        return [o for o in self.objects if o.get("kind") == kind]

    def deployment(self):
        (d,) = self.of_kind("Deployment")
        return d

    def pod_spec(self):
        return self.deployment()["spec"]["template"]["spec"]

    def server(self):
        (c,) = [c for c in self.pod_spec()["containers"] if c["name"] == "ferry"]
        return c

    def flags(self, container=None):
        return parse_flags((container or self.server()).get("args", []))

    def service(self):
        name = self.deployment()["metadata"]["name"]
        (s,) = [s for s in self.of_kind("Service") if s["metadata"]["name"] == name]
        return s

    def pod_specs(self):
        """(what, pod spec) for the server and every Pod (the test)."""
        out = [("Deployment " + self.deployment()["metadata"]["name"], self.pod_spec())]
        out += [("Pod " + p["metadata"]["name"], p["spec"]) for p in self.of_kind("Pod")]
        return out


def parse_flags(args):
    """{name: [values]} of --name=value arguments (dashes in names read as
    underscores, as ferry reads them) and of "-n N"."""
    out = {}
    i = 0
    while i < len(args):
        a = str(args[i])
        if a.startswith("--") and "=" in a:
            name, value = a[2:].split("=", 1)
            out.setdefault(name.replace("-", "_"), []).append(value)
        elif a == "-n" and i + 1 < len(args):
            out.setdefault("n", []).append(str(args[i + 1]))
            i += 1
        else:
            out.setdefault(a.lstrip("-").replace("-", "_"), []).append(None)
        i += 1
    return out


def one(flags, name):
    v = flags.get(name, [])
    return v[-1] if v else None


def port_number(container, port):
    """A probe's or Service's port (a number or a container port's name) as a
    number, or None when the container has no such port."""
    for p in container.get("ports", []):
        if port == p.get("name") or port == p.get("containerPort"):
            return p["containerPort"]
    return None


def subset(small, big):
    return all(big.get(k) == v for k, v in (small or {}).items())


# ---------------------------------------------------------------------------


def grace_covers_drain(r):
    """terminationGracePeriodSeconds >= preStop sleep + --drain_seconds + margin."""
    c = r.server()
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    if len(pre) != 2 or pre[0] != "sleep":
        return [f"preStop is {pre!r}, not a sleep"]
    drain = one(r.flags(), "drain_seconds")
    if drain is None:
        return ["no --drain_seconds: ferry's own default would be unknown to the chart"]
    grace = r.pod_spec().get("terminationGracePeriodSeconds", 30)
    need = int(pre[1]) + math.ceil(float(drain)) + r.values["drain"]["marginSeconds"]
    if grace < need:
        return [f"terminationGracePeriodSeconds {grace} < preStop {pre[1]} + drain {drain} + margin "
                f"{r.values['drain']['marginSeconds']} = {need}"]
    return []


def startup_budget(r):
    """The startup probe (HTTP /readyz on the metrics port every 10 s) lasts
    at least model.maxLoadSeconds, and the rollout's deadline no less."""
    c = r.server()
    p = c.get("startupProbe")
    if not p:
        return ["no startupProbe"]
    out = []
    get = p.get("httpGet", {})
    if get.get("path") != "/readyz" or port_number(c, get.get("port")) != int(one(r.flags(), "metrics_port")):
        out.append(f"startupProbe is {p!r}, not HTTP /readyz on the metrics port")
    if p.get("periodSeconds") != 10:
        out.append(f"startupProbe period {p.get('periodSeconds')} s, not 10")
    budget = p.get("periodSeconds", 10) * p.get("failureThreshold", 3)
    want = r.values["model"]["maxLoadSeconds"]
    if budget < want:
        out.append(f"startup budget {budget} s < model.maxLoadSeconds {want}")
    deadline = r.deployment()["spec"].get("progressDeadlineSeconds", 600)
    if deadline < budget:
        out.append(f"progressDeadlineSeconds {deadline} < startup budget {budget}")
    return out


def liveness_healthz(r):
    """Liveness is HTTP /healthz on the metrics port, and only liveness is."""
    c = r.server()
    out = []
    p = c.get("livenessProbe", {})
    get = p.get("httpGet")
    if not get or get.get("path") != "/healthz" or set(p) & {"grpc", "exec", "tcpSocket"}:
        out.append(f"livenessProbe is {p!r}, not HTTP /healthz")
    elif port_number(c, get.get("port")) != int(one(r.flags(), "metrics_port")):
        out.append(f"livenessProbe port {get.get('port')} is not the metrics port")
    for name in ("readinessProbe", "startupProbe"):
        if c.get(name, {}).get("httpGet", {}).get("path") == "/healthz":
            out.append(f"{name} uses /healthz, which stays 200 while ferry drains")
    return out


def no_grpc_probe_with_tls(r):
    """With --tls_cert no probe is a gRPC probe (the kubelet's has no TLS);
    without it readiness is native gRPC health on --port."""
    c = r.server()
    flags = r.flags()
    probes = {n: c.get(n, {}) for n in ("startupProbe", "livenessProbe", "readinessProbe")}
    if "tls_cert" in flags:
        return [f"{n} is a gRPC probe on a TLS port" for n, p in probes.items() if "grpc" in p]
    g = probes["readinessProbe"].get("grpc")
    if not g or g.get("port") != int(one(flags, "port")):
        return [f"readinessProbe is {probes['readinessProbe']!r}, not gRPC health on --port"]
    return []


def ports_agree(r):
    """--port / --metrics_port, the containerPorts, the probes, the Services'
    targetPorts, appProtocol, the ServiceMonitor, the NetworkPolicy, the
    PodDisruptionBudget, the autoscalers and the test's --target all name
    the same ports and pods."""
    out = []
    c = r.server()
    flags = r.flags()
    grpc, metrics = int(one(flags, "port")), int(one(flags, "metrics_port"))
    if one(flags, "host") != "0.0.0.0" or one(flags, "metrics_host") != "0.0.0.0":
        out.append("ferry does not listen on 0.0.0.0 for both ports")
    if port_number(c, "grpc") != grpc or port_number(c, "metrics") != metrics:
        out.append(f"containerPorts {c.get('ports')} are not grpc={grpc}, metrics={metrics}")
    for name in ("startupProbe", "livenessProbe", "readinessProbe"):
        p = c.get(name, {})
        port = p.get("httpGet", p.get("grpc", {})).get("port")
        if port is not None and port_number(c, port) is None:
            out.append(f"{name} port {port} is no container port")
    pod_labels = r.deployment()["spec"]["template"]["metadata"]["labels"]
    tls = "tls_cert" in flags
    for s in r.of_kind("Service"):
        if not subset(s["spec"].get("selector"), pod_labels) or not s["spec"].get("selector"):
            out.append(f"Service {s['metadata']['name']} does not select the server pods")
        for p in s["spec"]["ports"]:
            if port_number(c, p.get("targetPort", p["port"])) is None:
                out.append(f"Service {s['metadata']['name']} port {p['name']} targets no container port")
            if p["name"] == "grpc" and (p.get("appProtocol") == "kubernetes.io/h2c") == tls:
                out.append(f"Service {s['metadata']['name']} grpc appProtocol {p.get('appProtocol')!r} "
                           f"with TLS {'on' if tls else 'off'}")
    svc = r.service()
    for m in r.of_kind("ServiceMonitor"):
        if not subset(m["spec"]["selector"].get("matchLabels"), svc["metadata"]["labels"]):
            out.append(f"ServiceMonitor {m['metadata']['name']} does not select Service {svc['metadata']['name']}")
        names = {p["name"] for p in svc["spec"]["ports"]}
        for e in m["spec"]["endpoints"]:
            port = next((p for p in svc["spec"]["ports"] if p["name"] == e.get("port")), None)
            if port is None:
                out.append(f"ServiceMonitor endpoint port {e.get('port')!r} is not one of the Service's {sorted(names)}")
            elif port_number(c, port.get("targetPort")) != metrics or e.get("path", "/metrics") != "/metrics":
                out.append(f"ServiceMonitor scrapes {e!r}, not /metrics on --metrics_port")
    for n in r.of_kind("NetworkPolicy"):
        if not subset(n["spec"]["podSelector"].get("matchLabels"), pod_labels):
            out.append(f"NetworkPolicy {n['metadata']['name']} does not select the server pods")
        for rule in n["spec"].get("ingress", []):
            for p in rule.get("ports", []):
                if port_number(c, p.get("port")) is None:
                    out.append(f"NetworkPolicy port {p.get('port')} is no container port")
    for p in r.of_kind("PodDisruptionBudget"):
        if not subset(p["spec"]["selector"].get("matchLabels"), pod_labels):
            out.append(f"PodDisruptionBudget {p['metadata']['name']} does not select the server pods")
    for a in r.of_kind("HorizontalPodAutoscaler") + r.of_kind("ScaledObject"):
        ref = a["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") != r.deployment()["metadata"]["name"]:
            out.append(f"{a['kind']} scales {ref}, not the Deployment")
    svc_grpc = next((p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"), None)
    for pod in r.of_kind("Pod"):
        target = one(parse_flags(pod["spec"]["containers"][0].get("args", [])), "target") or ""
        host, _, port = target.rpartition(":")
        if port != str(svc_grpc):
            out.append(f"test pod targets port {port}, the Service's grpc port is {svc_grpc}")
        if not r.values["test"]["host"] and host.split(".")[0] != svc["metadata"]["name"]:
            out.append(f"test pod targets {host}, not Service {svc['metadata']['name']}")
    return out


def gpu_resources(r):
    """GPU (extended) resources: limits = requests; exactly gpu.count of
    gpu.resourceName on the server when --device is cuda, with the GPU taint
    tolerated; none anywhere otherwise."""
    out = []
    cuda = (one(r.flags(), "device") or "").startswith("cuda")
    for what, spec in r.pod_specs():
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            res = c.get("resources", {})
            lim, req = res.get("limits", {}), res.get("requests", {})
            ext = {k for k in set(lim) | set(req) if k not in STANDARD_RESOURCES and not k.startswith("hugepages-")}
            for k in ext:
                if str(lim.get(k)) != str(req.get(k)):
                    out.append(f"{what} {c['name']}: {k} limits {lim.get(k)} != requests {req.get(k)}")
            is_server = what.startswith("Deployment") and c["name"] == "ferry"
            if is_server and cuda:
                want = {r.values["gpu"]["resourceName"]: r.values["gpu"]["count"]}
                got = {k: lim.get(k) for k in ext}
                if got != want or int(r.values["gpu"]["count"]) < 1:
                    out.append(f"{what}: --device cuda with GPU limits {got}, want {want}")
            elif ext:
                out.append(f"{what} {c['name']}: extended resources {sorted(ext)} without a cuda device")
    spec = r.pod_spec()
    tolerated = any(t.get("key") == "nvidia.com/gpu" and t.get("effect") == "NoSchedule"
                    for t in spec.get("tolerations", []))
    if cuda and r.values["gpu"]["tolerateGpuTaint"] and not tolerated:
        out.append("a GPU pod without the nvidia.com/gpu NoSchedule toleration")
    if not cuda and (tolerated or spec.get("runtimeClassName")):
        out.append("GPU toleration or runtimeClassName on a pod without a GPU")
    return out


def one_model_source(r):
    """One --model at most; it lies in exactly one read-only mount of one
    volume of the source model.source names (none for the demo)."""
    out = []
    c = r.server()
    spec = r.pod_spec()
    models = r.flags().get("model", [])
    source = r.values["model"]["source"]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    kinds = {"pvc": "persistentVolumeClaim", "hostPath": "hostPath", "image": "image", "initCopy": "emptyDir"}
    if len(models) > 1:
        return [f"--model given {len(models)} times"]
    if not models:
        if source != "demo":
            out.append(f"model.source {source} but no --model")
        if any(m["name"] == "model" for m in c.get("volumeMounts", [])):
            out.append("a model volume mounted for the demo model")
        return out
    path = models[0]
    covering = [m for m in c.get("volumeMounts", []) if path.startswith(m["mountPath"].rstrip("/") + "/")]
    if len(covering) != 1:
        return [f"--model {path} lies in {len(covering)} mounts"]
    m = covering[0]
    if m.get("readOnly") is not True:
        out.append(f"the model mount {m['mountPath']} is not read-only")
    v = volumes.get(m["name"], {})
    sources = [k for k in v if k != "name"]
    if sources != [kinds.get(source)]:
        out.append(f"model volume {v!r} is not one {kinds.get(source)} (model.source {source})")
    if "persistentVolumeClaim" in v and v["persistentVolumeClaim"].get("readOnly") is not True:
        out.append("the model claim is not mounted read-only")
    if "emptyDir" in v:
        writers = [i for i in spec.get("initContainers", [])
                   if any(x["name"] == m["name"] for x in i.get("volumeMounts", []))]
        if len(writers) != 1 or writers[0].get("command", [])[-1:] != [path]:
            out.append(f"no init container copies the model to {path}")
    return out


def single_node_claim(r):
    """A ReadWriteOnce(Pod) model claim: one pod, no autoscaler above one,
    strategy Recreate."""
    modes = set()
    if r.values["model"]["source"] == "pvc":
        modes |= set(r.values["model"]["pvc"]["accessModes"])
    claims = {v["persistentVolumeClaim"]["claimName"] for v in r.pod_spec().get("volumes", [])
              if "persistentVolumeClaim" in v}
    for p in r.of_kind("PersistentVolumeClaim"):
        if p["metadata"]["name"] in claims:
            modes |= set(p["spec"]["accessModes"])
    if not modes & {"ReadWriteOnce", "ReadWriteOncePod"}:
        return []
    out = []
    spec = r.deployment()["spec"]
    if spec.get("replicas", 1) > 1:
        out.append(f"{sorted(modes)} claim with {spec['replicas']} replicas")
    if spec.get("strategy", {}).get("type", "RollingUpdate") != "Recreate":
        out.append(f"{sorted(modes)} claim with strategy {spec.get('strategy')}")
    for a in r.of_kind("HorizontalPodAutoscaler"):
        if a["spec"]["maxReplicas"] > 1:
            out.append(f"{sorted(modes)} claim with an HPA up to {a['spec']['maxReplicas']}")
    for a in r.of_kind("ScaledObject"):
        if a["spec"].get("maxReplicaCount", 100) > 1:
            out.append(f"{sorted(modes)} claim with KEDA up to {a['spec'].get('maxReplicaCount')}")
    return out


def non_root(r):
    """Every pod: numeric non-root UID, RuntimeDefault seccomp; every
    container: no privilege escalation, ALL capabilities dropped, the root
    filesystem read-only as values say, with emptyDirs for /tmp and the
    cache directory."""
    out = []
    ro = r.values["securityContext"]["readOnlyRootFilesystem"]
    for what, spec in r.pod_specs():
        psc = spec.get("securityContext", {})
        uid = psc.get("runAsUser")
        if psc.get("runAsNonRoot") is not True or type(uid) is not int or uid < 1:
            out.append(f"{what}: runAsNonRoot {psc.get('runAsNonRoot')}, runAsUser {uid!r}")
        if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            out.append(f"{what}: seccompProfile {psc.get('seccompProfile')}")
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            sc = c.get("securityContext", {})
            caps = sc.get("capabilities", {})
            if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
                out.append(f"{what} {c['name']}: privilege escalation not refused")
            if "ALL" not in caps.get("drop", []) or caps.get("add"):
                out.append(f"{what} {c['name']}: capabilities {caps}")
            if "runAsUser" in sc and (type(sc["runAsUser"]) is not int or sc["runAsUser"] < 1):
                out.append(f"{what} {c['name']}: runAsUser {sc['runAsUser']!r}")
            if sc.get("readOnlyRootFilesystem") is not ro:
                out.append(f"{what} {c['name']}: readOnlyRootFilesystem {sc.get('readOnlyRootFilesystem')}, values say {ro}")
    spec = r.pod_spec()
    c = r.server()
    empty = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    mounted = {m["mountPath"] for m in c.get("volumeMounts", []) if m["name"] in empty}
    cache = next((e.get("value") for e in c.get("env", []) if e["name"] == "FERRY_CACHE_DIR"), None)
    for path in ("/tmp", cache):
        if path not in mounted:
            out.append(f"no emptyDir at {path} (FERRY_CACHE_DIR {cache})")
    return out


def no_secret_values(r):
    """Secrets reach ferry only as files: no Secret rendered, no secret in
    env, every secret volume mounted read-only, and every TLS/token flag a
    path inside such a mount."""
    out = []
    if r.of_kind("Secret"):
        out.append("the chart renders a Secret (its values would sit in the release)")
    for what, spec in r.pod_specs():
        secret_vols = {v["name"] for v in spec.get("volumes", []) if "secret" in v}
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            for e in c.get("env", []):
                if "secretKeyRef" in e.get("valueFrom", {}):
                    out.append(f"{what} {c['name']}: env {e['name']} from a Secret")
            for e in c.get("envFrom", []):
                if "secretRef" in e:
                    out.append(f"{what} {c['name']}: envFrom a Secret")
            ro_dirs = []
            for m in c.get("volumeMounts", []):
                if m["name"] in secret_vols:
                    if m.get("readOnly") is not True:
                        out.append(f"{what} {c['name']}: secret volume {m['name']} mounted writable")
                    else:
                        ro_dirs.append(m["mountPath"].rstrip("/") + "/")
            flags = parse_flags(c.get("args", []))
            for name in SECRET_FLAGS:
                for value in flags.get(name, []):
                    if not value or not any(value.startswith(d) for d in ro_dirs):
                        out.append(f"{what} {c['name']}: --{name}={value} is not a file in a read-only secret mount")
    return out


def autoscalers_exclusive(r):
    """An HPA or a KEDA ScaledObject, not both; with either, the Deployment
    sets no replicas (each upgrade would reset the autoscaler's count)."""
    hpa, keda = r.of_kind("HorizontalPodAutoscaler"), r.of_kind("ScaledObject")
    out = []
    if hpa and keda:
        out.append("both an HPA and a KEDA ScaledObject")
    if len(hpa) > 1 or len(keda) > 1:
        out.append("more than one autoscaler of a kind")
    if (hpa or keda) and "replicas" in r.deployment()["spec"]:
        out.append("an autoscaled Deployment with spec.replicas")
    return out


def scaling_metric_exported(r):
    """The KEDA query and the HPA's pods metric name metrics ferry exports
    (service/metrics.cc)."""
    exported = chart.exported_metrics()
    out = []
    for so in r.of_kind("ScaledObject"):
        for t in so["spec"]["triggers"]:
            names = re.findall(r"\bferry_[a-z0-9_]+", t.get("metadata", {}).get("query", ""))
            if not names:
                out.append(f"KEDA trigger {t!r} names no ferry metric")
            out += [f"KEDA query names {n}, which ferry does not export" for n in names if n not in exported]
    for h in r.of_kind("HorizontalPodAutoscaler"):
        for m in h["spec"].get("metrics", []):
            if m["type"] == "Pods" and m["pods"]["metric"]["name"] not in exported:
                out.append(f"HPA metric {m['pods']['metric']['name']} is not exported by ferry")
    return out


def monitoring_files_equal(r):
    """The dashboard and the alert rules are deploy/'s files, byte for byte:
    the chart's copies, the ConfigMap's data and the PrometheusRule's spec."""
    out = []
    pairs = {"files/ferry.json": "deploy/grafana/ferry.json", "files/alerts.yml": "deploy/prometheus/alerts.yml"}
    text = {}
    for mine, theirs in pairs.items():
        with open(os.path.join(r.chart_dir, mine), "rb") as a, open(os.path.join(chart.ROOT, theirs), "rb") as b:
            text[theirs] = b.read()
            if a.read() != text[theirs]:
                out.append(f"helm/ferry/{mine} differs from {theirs} (copy it over)")
    for cm in r.of_kind("ConfigMap"):
        if cm["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            if cm["data"].get("ferry.json", "").encode() != text["deploy/grafana/ferry.json"]:
                out.append(f"ConfigMap {cm['metadata']['name']} ferry.json differs from deploy/grafana/ferry.json")
    for pr in r.of_kind("PrometheusRule"):
        if pr["spec"] != yaml.safe_load(text["deploy/prometheus/alerts.yml"]):
            out.append(f"PrometheusRule {pr['metadata']['name']} differs from deploy/prometheus/alerts.yml")
    return out


def test_hook(r):
    """One Pod, the helm test hook, running the server's image as `ferry
    loadgen --requests 1 -n 4`, with TLS, mTLS and token flags exactly when
    the server has them."""
    out = []
    pods = r.of_kind("Pod")
    hooks = [p for p in pods if p["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if len(pods) != 1 or len(hooks) != 1:
        return [f"{len(pods)} Pods, {len(hooks)} with helm.sh/hook: test"]
    (c,) = hooks[0]["spec"]["containers"]
    server = r.flags()
    flags = parse_flags(c.get("args", []))
    if c.get("command") != ["ferry", "loadgen"] or c.get("image") != r.server()["image"]:
        out.append(f"test runs {c.get('command')} in {c.get('image')}, not ferry loadgen in the server's image")
    if flags.get("requests") != ["1"] or flags.get("n") != ["4"]:
        out.append(f"test asks --requests {flags.get('requests')} -n {flags.get('n')}, not 1 and 4")
    want = {"tls_ca": "tls_cert" in server, "tls_cert": "tls_client_ca" in server,
            "tls_key": "tls_client_ca" in server, "auth_token_file": "auth_token_file" in server}
    for name, needed in want.items():
        if (name in flags) != needed:
            out.append(f"test {'lacks' if needed else 'has'} --{name}")
    return out


def app_version(r):
    """Chart.yaml's appVersion is ferry's version (CMakeLists.txt)."""
    with open(os.path.join(r.chart_dir, "Chart.yaml")) as f:
        meta = yaml.safe_load(f)
    if str(meta.get("appVersion")) != chart.ferry_version():
        return [f"appVersion {meta.get('appVersion')} != ferry {chart.ferry_version()}"]
    return []


INVARIANTS = [grace_covers_drain, startup_budget, liveness_healthz, no_grpc_probe_with_tls, ports_agree,
              gpu_resources, one_model_source, single_node_claim, non_root, no_secret_values,
              autoscalers_exclusive, scaling_metric_exported, monitoring_files_equal, test_hook, app_version]


# Broken copies of the chart (a template edit: file, text, replacement) or of
# a scenario's values, each of which the named invariant must catch.
MUTATIONS = [
    ("grace_covers_drain", "gpu", {"edit": ("templates/_helpers.tpl", "(ceil .Values.ferry.drainSeconds | int)", "0")}),
    ("startup_budget", "gpu", {"edit": ("templates/_helpers.tpl", "div (add .Values.model.maxLoadSeconds 9) 10",
                                        "div .Values.model.maxLoadSeconds 10")}),
    ("liveness_healthz", "default", {"edit": ("templates/deployment.yaml",
                                              "livenessProbe:\n            httpGet:\n              path: /healthz",
                                              "livenessProbe:\n            httpGet:\n              path: /readyz")}),
    ("no_grpc_probe_with_tls", "tls", {"edit": ("templates/deployment.yaml",
                                                "{{- if $v.tls.enabled }}\n            # The kubelet's gRPC probe",
                                                "{{- if false }}\n            # The kubelet's gRPC probe")}),
    ("ports_agree", "default", {"edit": ("templates/deployment.yaml", "containerPort: {{ int $f.grpcPort }}",
                                         "containerPort: {{ add1 (int $f.grpcPort) }}")}),
    ("ports_agree", "servicemonitor", {"edit": ("templates/servicemonitor.yaml", "- port: metrics",
                                                "- port: http-metrics")}),
    ("ports_agree", "tls", {"edit": ("templates/service.yaml", "{{- if not $v.tls.enabled }}\n      # gRPC is HTTP/2",
                                     "{{- if true }}\n      # gRPC is HTTP/2")}),
    ("gpu_resources", "gpu", {"edit": ("templates/deployment.yaml",
                                       '{{- $_ := set $res "requests" (merge (deepCopy $gpu) ($res.requests | default dict)) }}',
                                       "")}),
    ("gpu_resources", "mig", {"edit": ("templates/deployment.yaml",
                                       '(dict "key" "nvidia.com/gpu" "operator" "Exists" "effect" "NoSchedule")',
                                       '(dict "key" "example.com/other" "operator" "Exists" "effect" "NoSchedule")')}),
    ("one_model_source", "hostpath", {"edit": ("templates/deployment.yaml",
                                               "mountPath: {{ $v.model.mountPath }}\n              readOnly: true",
                                               "mountPath: {{ $v.model.mountPath }}")}),
    ("one_model_source", "init-copy", {"edit": ("templates/deployment.yaml",
                                                '{{ printf "%s/%s" $v.model.mountPath $v.model.file | quote }}]',
                                                '"/tmp/model.gguf"]')}),
    ("single_node_claim", "pvc", {"edit": ("templates/_helpers.tpl", '{{- if ne $v.strategy.type "Recreate" }}',
                                           "{{- if false }}"),
                                  "values": {"strategy": {"type": "RollingUpdate"}}}),
    ("non_root", "default", {"edit": ("templates/_helpers.tpl", "runAsNonRoot: true\nrunAsUser: {{ .Values.securityContext.runAsUser }}\nrunAsGroup: {{ .Values.securityContext.runAsGroup }}\nfsGroup",
                                      "runAsNonRoot: false\nrunAsUser: {{ .Values.securityContext.runAsUser }}\nrunAsGroup: {{ .Values.securityContext.runAsGroup }}\nfsGroup")}),
    ("non_root", "cpu-demo", {"edit": ("templates/_helpers.tpl", 'drop: ["ALL"]', 'drop: ["NET_RAW"]')}),
    ("non_root", "default", {"edit": ("templates/deployment.yaml", "            - name: tmp\n              mountPath: /tmp\n", "")}),
    ("no_secret_values", "token", {"edit": ("templates/deployment.yaml", "          env:\n",
                                            "          env:\n            - name: FERRY_TOKEN\n              valueFrom:\n"
                                            "                secretKeyRef: {name: ferry-token, key: token}\n")}),
    ("no_secret_values", "mtls", {"edit": ("templates/deployment.yaml",
                                           "mountPath: {{ include \"ferry.clientCADir\" . }}\n              readOnly: true",
                                           "mountPath: {{ include \"ferry.clientCADir\" . }}")}),
    ("autoscalers_exclusive", "keda", {"edit": ("templates/_helpers.tpl",
                                                "{{- if and $v.autoscaling.keda.enabled $v.autoscaling.hpa.enabled }}",
                                                "{{- if false }}"),
                                       "values": {"autoscaling": {"hpa": {"enabled": True}}}}),
    ("autoscalers_exclusive", "hpa", {"edit": ("templates/deployment.yaml", "{{- if not $autoscaled }}", "{{- if true }}")}),
    ("scaling_metric_exported", "keda", {"edit": ("templates/keda-scaledobject.yaml", "ferry_requests_waiting{",
                                                  "ferry_requests_queued{")}),
    ("monitoring_files_equal", "servicemonitor", {"edit": ("templates/dashboard.yaml", "ferry.json: |\n", "ferry.json: |-\n")}),
    ("monitoring_files_equal", "servicemonitor", {"edit": ("files/alerts.yml", "for: 2m", "for: 3m")}),
    ("test_hook", "default", {"edit": ("templates/tests/loadgen.yaml", "    helm.sh/hook: test\n", "")}),
    ("test_hook", "token", {"edit": ("templates/tests/loadgen.yaml",
                                     "- --auth_token_file={{ include \"ferry.authDir\" . }}/{{ $v.auth.key }}", "")}),
    ("app_version", "default", {"edit": ("Chart.yaml", 'appVersion: "0.1.0"', 'appVersion: "0.0.9"')}),
]

# Values the chart must refuse at render time, and the words its error says.
REFUSALS = [
    ("ReadWriteOnce claim with 2 replicas",
     {"model": {"source": "pvc", "pvc": {"existingClaim": "m", "accessModes": ["ReadWriteOnce"]}},
      "replicaCount": 2, "strategy": {"type": "Recreate"}}, "one node at a time"),
    ("ReadWriteOnce claim with RollingUpdate",
     {"model": {"source": "pvc", "pvc": {"existingClaim": "m", "accessModes": ["ReadWriteOnce"]}}},
     "set strategy.type Recreate"),
    ("ReadWriteOncePod claim with KEDA up to 4",
     {"model": {"source": "pvc", "pvc": {"create": True, "accessModes": ["ReadWriteOncePod"]}},
      "strategy": {"type": "Recreate"}, "autoscaling": {"keda": {"enabled": True}}}, "more than one pod may run"),
    ("KEDA and HPA together", {"autoscaling": {"keda": {"enabled": True}, "hpa": {"enabled": True}}},
     "both enabled"),
    ("image volume below Kubernetes 1.31", {"model": {"source": "image", "image": {"reference": "r/m:1"}}},
     "needs Kubernetes >= 1.31"),
    ("two model sources", {"model": {"source": "hostPath", "hostPath": {"path": "/m"},
                                     "pvc": {"existingClaim": "m"}}}, "exactly one model source"),
    ("pvc source without a claim", {"model": {"source": "pvc"}}, "set model.pvc.existingClaim or model.pvc.create"),
    ("a cuda device without gpu.enabled", {"ferry": {"device": "cuda:0"}}, "set gpu.enabled"),
    ("gpu.enabled with the cpu device", {"gpu": {"enabled": True}, "ferry": {"device": "cpu"}}, "use cuda"),
    ("batch below slots", {"ferry": {"slots": 8, "batch": 4}}, "must be at least ferry.slots"),
    ("mutual TLS without TLS", {"tls": {"clientCA": {"enabled": True, "secretName": "ca",
                                                     "testClientSecretName": "c"}}}, "needs tls.enabled"),
    ("TLS without a Secret", {"tls": {"enabled": True}}, "set tls.secretName"),
    ("token without a Secret", {"auth": {"enabled": True}}, "set auth.secretName"),
    ("same port twice", {"ferry": {"metricsPort": 50051}}, "must differ"),
]
