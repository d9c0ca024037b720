// Validate the prometheus-operator objects (ServiceMonitor, PrometheusRule) of rendered
// manifests against the operator's CRD schemas (npm kubernetes-models). Usage:
//   CRD_MODULES=<dir with node_modules> node validate-crds.mjs rendered.yaml...
import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";
const mod = (p) => import(pathToFileURL(`${process.env.CRD_MODULES}/${p}`).href);
const yaml = (await mod("js-yaml/dist/js-yaml.mjs")).default;
const v1 = "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
const kinds = {
  ServiceMonitor: (await mod(`${v1}/ServiceMonitor.js`)).ServiceMonitor,
  PrometheusRule: (await mod(`${v1}/PrometheusRule.js`)).PrometheusRule,
};
let checked = 0, failed = 0;
for (const file of process.argv.slice(2)) {
  for (const doc of yaml.loadAll(readFileSync(file, "utf8"))) {
    if (!doc || !String(doc.apiVersion).startsWith("monitoring.coreos.com/")) continue;
    const K = kinds[doc.kind];
    if (!K) { console.error(`${file}: no schema for ${doc.kind}`); failed++; continue; }
    try { new K(doc).validate(); checked++; }
    catch (e) { console.error(`${file}: ${doc.kind} ${doc.metadata?.name}: ${e.message}`); failed++; }
  }
}
console.log(`prometheus-operator objects: ${checked} valid, ${failed} invalid`);
process.exit(failed ? 1 : 0);
