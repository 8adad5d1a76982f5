"""The files of deploy/ that cannot run here (no container engine): the
compose file parses, names the three services, and every file it mounts
exists; it publishes ports on the host's loopback unless asked
(FERRY_PUBLISH_ADDRESS), never ferry's metrics port, and binds ferry's
metrics beyond loopback only for Prometheus on its network; the Grafana
provisioning parses and points at the dashboard's folder; the dashboard has
its fixed uid.

usage: deploy_check.py DEPLOY_DIR
"""
import json
import os
import sys

import yaml


def main():
    deploy = sys.argv[1]
    failures = []
    with open(os.path.join(deploy, "compose.yml")) as f:
        compose = yaml.safe_load(f)
    services = compose.get("services", {})
    for name in ("ferry", "prometheus", "grafana"):
        if name not in services:
            failures.append(f"compose.yml has no service {name}")
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            src = volume.split(":")[0]
            if src.startswith("."):
                path = os.path.normpath(os.path.join(deploy, src))
                if not os.path.exists(path):
                    failures.append(f"compose.yml: {name} mounts {src}, which does not exist")
    for name, svc in services.items():
        for port in svc.get("ports", []):
            spec = str(port)
            # HOST_ADDRESS:HOST_PORT:CONTAINER_PORT with the address loopback by default.
            if not (spec.startswith("127.0.0.1:") or spec.startswith("${FERRY_PUBLISH_ADDRESS:-127.0.0.1}:")):
                failures.append(f"compose.yml: {name} publishes {spec} on every interface by default")
            if spec.endswith(":9400"):
                failures.append(f"compose.yml: {name} publishes ferry's metrics port")
    command = services.get("ferry", {}).get("command", [])
    if "--metrics_host" in command and "prometheus" not in services:
        failures.append("compose.yml: ferry's metrics leave loopback with no Prometheus to scrape them")
    build = services.get("ferry", {}).get("build", {})
    dockerfile = os.path.normpath(os.path.join(deploy, build.get("context", "."), build.get("dockerfile", "")))
    if not os.path.isfile(dockerfile):
        failures.append(f"compose.yml: ferry builds from {dockerfile}, which does not exist")
    for sub in ("datasources/prometheus.yml", "dashboards/ferry.yml"):
        with open(os.path.join(deploy, "grafana/provisioning", sub)) as f:
            doc = yaml.safe_load(f)
        if doc.get("apiVersion") != 1:
            failures.append(f"provisioning {sub}: apiVersion {doc.get('apiVersion')}")
    with open(os.path.join(deploy, "grafana/ferry.json")) as f:
        dash = json.load(f)
    if dash.get("uid") != "ferry-overview":
        failures.append(f"dashboard uid {dash.get('uid')!r}")
    for f in failures:
        print("FAIL:", f)
    print(f"deploy/: {len(services)} compose services, provisioning and dashboard checked")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
