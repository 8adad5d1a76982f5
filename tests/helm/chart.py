"""ferry's Helm chart as Helm itself sees it, offline: the chart loaded and
rendered by Helm's Go SDK (the helm-python-sdk package), the scenarios of
helm/ferry/ci, and the Kubernetes minors the chart's kubeVersion admits.
"""
import glob
import json
import os
import re

import helm_python
import yaml
from helm_python import _native

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
CHART_DIR = os.path.join(ROOT, "helm", "ferry")
RELEASE = "demo"
NAMESPACE = "llm"


def load(chart_dir=CHART_DIR):
    return helm_python.Chart.load(chart_dir)


def scenarios(chart_dir=CHART_DIR):
    """{name: values} for every ci/<name>-values.yaml, plus "default" (no values)."""
    out = {"default": {}}
    for path in sorted(glob.glob(os.path.join(chart_dir, "ci", "*-values.yaml"))):
        name = os.path.basename(path)[: -len("-values.yaml")]
        with open(path) as f:
            out[name] = yaml.safe_load(f) or {}
    return out


def render(chart, values, kube_version):
    """{template path: text}, as `helm template --kube-version` renders it.

    Chart.render has no kube_version argument, but the C ABI it calls takes
    one (its options are decoded strictly: an unknown key is refused, so this
    one is real); .Capabilities.KubeVersion follows it.
    """
    opts = {"name": RELEASE, "namespace": NAMESPACE, "kube_version": kube_version}
    text = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts))
    return json.loads(text)


def objects(rendered):
    """The Kubernetes objects of a render (NOTES.txt and empty templates left out)."""
    out = []
    for path in sorted(rendered):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(rendered[path]):
            if doc:
                out.append(doc)
    return out


def install_refused(chart, kube_version):
    """None when `helm install --dry-run=client --kube-version V` accepts the
    chart, else Helm's reason (the chart's kubeVersion constraint is checked
    there, not by render or lint)."""
    config = helm_python.Config(storage_driver="memory", namespace=NAMESPACE)
    try:
        opts = json.dumps({"dry_run": "client", "kube_version": kube_version})
        _native.call_string("helm_install", config._raw(), _native.HANDLE(0), chart._raw(), None, RELEASE,
                            "{}", opts)
        return None
    except helm_python.HelmError as e:
        return str(e)
    finally:
        config.close()


def kube_minors(chart, candidates):
    """The candidate versions (e.g. 1.25.0 ... 1.37.0) Helm installs the chart on."""
    return [v for v in candidates if install_refused(chart, "v" + v) is None]


def ferry_version():
    """project(ferry VERSION x.y.z) of the top-level CMakeLists.txt."""
    with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
        m = re.search(r"project\(ferry\s+VERSION\s+([0-9.]+)", f.read())
    return m.group(1)


def exported_metrics():
    """The metric names service/metrics.cc registers (histograms also as
    _bucket, _sum and _count series)."""
    with open(os.path.join(ROOT, "service", "metrics.cc")) as f:
        text = f.read()
    names = set()
    for kind, name in re.findall(r'\b(gauge|counter|histogram)\("(ferry_[a-z0-9_]+)"', text):
        names.add(name)
        if kind == "histogram":
            names.update(name + s for s in ("_bucket", "_sum", "_count"))
    return names


def set_path(values, dotted, value):
    """A deep copy of values with a.b.c set (lists by index: a.0.b)."""
    out = json.loads(json.dumps(values))
    node = out
    keys = dotted.split(".")
    for k in keys[:-1]:
        if isinstance(node, list):
            node = node[int(k)]
        else:
            node = node.setdefault(k, {})
    if isinstance(node, list):
        node[int(keys[-1])] = value
    else:
        node[keys[-1]] = value
    return out
