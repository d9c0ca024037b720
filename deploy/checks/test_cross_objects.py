#!/usr/bin/env python3
"""The cross-object check must catch broken manifests: each test breaks one thing in a good
render and expects exactly that problem. Needs HHH_RENDERED (a good render with autoscaling,
monitoring and both servers) and HHH_METRICS (a real /metrics exposition).

    HHH_RENDERED=... HHH_METRICS=... python3 -m unittest deploy/checks/test_cross_objects.py
"""
import copy
import os
import sys
import unittest

import yaml

sys.path.insert(0, os.path.dirname(__file__))
import cross_objects as co  # noqa: E402


class CrossObjects(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.environ["HHH_RENDERED"]) as f:
            cls.docs = [d for d in yaml.safe_load_all(f) if d]
        with open(os.environ["HHH_METRICS"]) as f:
            cls.names = co.exported(f.read())
        cls.adapter = {"hhh_num_requests_waiting", "hhh_kv_cache_usage_ratio"}

    def problems(self, mutate):
        docs = copy.deepcopy(self.docs)
        mutate({(d["kind"], d["metadata"]["name"].rsplit("-", 1)[-1]): d for d in docs})
        return co.check_release(docs, self.names, self.adapter, "t")

    def test_good_render_is_clean(self):
        self.assertEqual(self.problems(lambda d: None), [])
        self.assertIn("hhh_num_requests_waiting", self.names)

    def test_service_selector_must_match_pods(self):
        p = self.problems(lambda d: d[("Service", "policy")]["spec"]["selector"].update({"app.kubernetes.io/component": "typo"}))
        self.assertTrue(any("Service" in e and "selects 0" in e for e in p), p)

    def test_service_target_port_must_exist(self):
        p = self.problems(lambda d: d[("Service", "policy")]["spec"]["ports"][0].update({"targetPort": "metrics"}))
        self.assertTrue(any("targetPort 'metrics'" in e for e in p), p)

    def test_probe_port_must_exist(self):
        p = self.problems(lambda d: d[("Deployment", "policy")]["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"].update({"port": 9999}))
        self.assertTrue(any("readinessProbe port 9999" in e for e in p), p)

    def test_pdb_selector_must_match(self):
        p = self.problems(lambda d: d[("PodDisruptionBudget", "preference")]["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/instance": "other"}))
        self.assertTrue(any("PodDisruptionBudget" in e for e in p), p)

    def test_servicemonitor_port_must_be_a_service_port_name(self):
        p = self.problems(lambda d: d[("ServiceMonitor", "policy")]["spec"]["endpoints"][0].update({"port": "metrics"}))
        self.assertTrue(any("ServiceMonitor" in e and "'metrics'" in e for e in p), p)

    def test_hpa_target_and_metrics(self):
        def m(d):
            h = d[("HorizontalPodAutoscaler", "policy")]["spec"]
            h["scaleTargetRef"]["name"] += "-x"
            h["metrics"][0]["pods"]["metric"]["name"] = "hhh_queue_depth"
        p = self.problems(m)
        self.assertTrue(any("not a rendered Deployment" in e for e in p), p)
        self.assertTrue(any("hhh_queue_depth, which the server does not export" in e for e in p), p)
        self.assertTrue(any("hhh_queue_depth, which no prometheus-adapter rule serves" in e for e in p), p)

    def test_alert_metrics_must_be_exported(self):
        def m(d):
            rule = next(v for k, v in d.items() if k[0] == "PrometheusRule")
            rule["spec"]["groups"][0]["rules"][0]["expr"] = "hhh_ttft_seconds > 1"
        p = self.problems(m)
        self.assertTrue(any("uses hhh_ttft_seconds" in e for e in p), p)

    def test_grace_period_covers_the_drain(self):
        p = self.problems(lambda d: d[("Deployment", "policy")]["spec"]["template"]["spec"].update({"terminationGracePeriodSeconds": 10}))
        self.assertTrue(any("grace 10s" in e for e in p), p)


if __name__ == "__main__":
    unittest.main()
