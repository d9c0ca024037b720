#!/usr/bin/env python3
"""Cross-object checks of rendered hhh-serve manifests that schema validation cannot do.

    cross_objects.py --metrics exposition.txt [--adapter values.yaml] [--alerts alerts.yaml]
                     [--dashboard dashboard.json] rendered.yaml...

For each rendered file (one Helm release):
  * every Service, PodDisruptionBudget, NetworkPolicy and ServiceMonitor selects the pods of
    exactly one Deployment (ServiceMonitors: a Service);
  * Service targetPorts, probe ports and NetworkPolicy ports exist as container ports;
  * a ServiceMonitor's endpoint port is a port name of the Service it selects;
  * every HPA targets a rendered Deployment, and every metric it scales on is served by a
    prometheus-adapter rule and exported by the running server;
  * Secret and PVC references resolve (to a rendered object or a value-provided external name);
  * terminationGracePeriodSeconds covers the preStop sleep plus the server's --shutdown-timeout;
and every metric named by the adapter rules, the alert rules, the PrometheusRule and the Grafana
dashboard is in the server's real /metrics exposition (`--metrics`, read from a running server).
Exit status 1 with one line per problem. Needs PyYAML.
"""
import argparse
import json
import re
import sys

import yaml

METRIC = re.compile(r"\bhhh_[a-z0-9_]+\b")


def exported(exposition):
    """Metric names a Prometheus query can use, from `# TYPE` lines (histograms' series too)."""
    names = set()
    for line in exposition.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            name, kind = m.groups()
            names.add(name)
            if kind in ("histogram", "summary"):
                names |= {name + "_bucket", name + "_sum", name + "_count"}
    return names


def metric_names(text):
    return set(METRIC.findall(text))


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_names(containers):
    out = set()
    for c in containers:
        for p in c.get("ports", []):
            out.add(p.get("name"))
            out.add(p.get("containerPort"))
    return out


def check_release(docs, names, adapter_metrics, where):
    errs = []
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    deps = by_kind.get("Deployment", [])
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in deps}

    def selected(selector, what):
        hits = [n for n, t in pods.items() if matches(selector, t["metadata"].get("labels", {}))]
        if len(hits) != 1:
            errs.append(f"{where}: {what} selects {len(hits)} Deployments' pods ({selector})")
            return None
        return pods[hits[0]]

    for d in deps:
        tpl = d["spec"]["template"]
        if not matches(d["spec"]["selector"]["matchLabels"], tpl["metadata"].get("labels", {})):
            errs.append(f"{where}: Deployment {d['metadata']['name']} selector does not match its pod labels")
        for c in tpl["spec"]["containers"]:
            ports = port_names([c])
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                p = c.get(probe, {}).get("httpGet", {}).get("port")
                if p is not None and p not in ports:
                    errs.append(f"{where}: {d['metadata']['name']}/{c['name']} {probe} port {p!r} is not a container port")
            args = " ".join(c.get("args", []))
            m = re.search(r"--shutdown-timeout=(\d+)", args)
            stop = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
            sleep = int(stop[1]) if len(stop) == 2 and stop[0] == "sleep" else 0
            grace = tpl["spec"].get("terminationGracePeriodSeconds", 30)
            if m and grace < sleep + int(m.group(1)):
                errs.append(f"{where}: {d['metadata']['name']} grace {grace}s < preStop {sleep}s + shutdown {m.group(1)}s")
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    sec = [s for s in by_kind.get("Secret", []) if s["metadata"]["name"] == ref["name"]]
                    if sec and ref["key"] not in {**sec[0].get("data", {}), **sec[0].get("stringData", {})}:
                        errs.append(f"{where}: Secret {ref['name']} has no key {ref['key']}")
        for v in tpl["spec"].get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            pvcs = {p["metadata"]["name"] for p in by_kind.get("PersistentVolumeClaim", [])}
            if claim and pvcs and claim not in pvcs:
                errs.append(f"{where}: volume {v['name']} claims {claim}, not a rendered PVC ({sorted(pvcs)})")
    services = {}
    for s in by_kind.get("Service", []):
        services[s["metadata"]["name"]] = s
        tpl = selected(s["spec"].get("selector", {}), f"Service {s['metadata']['name']}")
        if tpl:
            ports = port_names(tpl["spec"]["containers"])
            for p in s["spec"]["ports"]:
                if p.get("targetPort", p["port"]) not in ports:
                    errs.append(f"{where}: Service {s['metadata']['name']} targetPort {p.get('targetPort')!r} is not a container port")
    for p in by_kind.get("PodDisruptionBudget", []):
        selected(p["spec"]["selector"]["matchLabels"], f"PodDisruptionBudget {p['metadata']['name']}")
    for n in by_kind.get("NetworkPolicy", []):
        tpl = selected(n["spec"]["podSelector"].get("matchLabels", {}), f"NetworkPolicy {n['metadata']['name']}")
        if tpl:
            ports = port_names(tpl["spec"]["containers"])
            for rule in n["spec"].get("ingress", []):
                for p in rule.get("ports", []):
                    if p.get("port") not in ports:
                        errs.append(f"{where}: NetworkPolicy {n['metadata']['name']} ingress port {p.get('port')!r} is not a container port")
    for sm in by_kind.get("ServiceMonitor", []):
        sel = sm["spec"]["selector"]["matchLabels"]
        hits = [s for s in services.values() if matches(sel, s["metadata"].get("labels", {}))]
        if len(hits) != 1:
            errs.append(f"{where}: ServiceMonitor {sm['metadata']['name']} selects {len(hits)} Services")
            continue
        svc_ports = {p.get("name") for p in hits[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in svc_ports:
                errs.append(f"{where}: ServiceMonitor {sm['metadata']['name']} port {ep.get('port')!r} is not a port name of Service {hits[0]['metadata']['name']}")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        ref = h["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") not in pods:
            errs.append(f"{where}: HPA {h['metadata']['name']} targets {ref.get('kind')} {ref.get('name')}, not a rendered Deployment")
        for m in h["spec"].get("metrics", []):
            name = m.get(m["type"].lower() if m["type"] != "Pods" else "pods", {}).get("metric", {}).get("name")
            if name and name not in names:
                errs.append(f"{where}: HPA {h['metadata']['name']} scales on {name}, which the server does not export")
            if name and name not in adapter_metrics:
                errs.append(f"{where}: HPA {h['metadata']['name']} scales on {name}, which no prometheus-adapter rule serves")
    for r in by_kind.get("PrometheusRule", []):
        for unknown in sorted(metric_names(json.dumps(r["spec"])) - names):
            errs.append(f"{where}: PrometheusRule {r['metadata']['name']} uses {unknown}, which the server does not export")
    for cm in by_kind.get("ConfigMap", []):
        for unknown in sorted(metric_names(json.dumps(cm.get("data", {}))) - names):
            errs.append(f"{where}: ConfigMap {cm['metadata']['name']} (dashboard) uses {unknown}, which the server does not export")
    return errs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", required=True, help="the /metrics exposition of a running server")
    ap.add_argument("--adapter", help="prometheus-adapter values with rules.custom")
    ap.add_argument("--alerts", help="Prometheus rule file")
    ap.add_argument("--dashboard", help="Grafana dashboard JSON")
    ap.add_argument("rendered", nargs="+")
    a = ap.parse_args(argv)
    errs = check(a)
    for e in errs:
        print(e)
    print(f"cross-object check: {len(a.rendered)} release(s), {len(errs)} problem(s)", file=sys.stderr)
    return 1 if errs else 0


def check(a):
    with open(a.metrics) as f:
        names = exported(f.read())
    if not names:
        return [f"{a.metrics}: no metrics (is it a /metrics exposition?)"]
    errs, adapter_metrics = [], set()
    if a.adapter:
        with open(a.adapter) as f:
            rules = yaml.safe_load(f)["rules"]["custom"]
        for r in rules:
            for n in sorted(metric_names(r["seriesQuery"]) - names):
                errs.append(f"{a.adapter}: rule series {n} is not exported by the server")
            adapter_metrics.add(r["name"].get("as") or r["name"]["matches"].strip("^$"))
    for path in filter(None, [a.alerts]):
        with open(path) as f:
            used = metric_names(f.read())
        for n in sorted(used - names):
            errs.append(f"{path}: uses {n}, which the server does not export")
    if a.dashboard:
        with open(a.dashboard) as f:
            used = metric_names(json.dumps(json.load(f)))
        for n in sorted(used - names):
            errs.append(f"{a.dashboard}: uses {n}, which the server does not export")
    for path in a.rendered:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        errs += check_release(docs, names, adapter_metrics, path)
    return errs


if __name__ == "__main__":
    sys.exit(main())
