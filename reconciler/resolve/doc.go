// Package resolve owns the last step from a Kubernetes pod to what a
// machine's agent runs: it turns a pod as written (a bare Pod, or a
// workload's pod template with its controller's per-pod changes), the
// repository's ConfigMaps and Secrets, and the machine the pod lands on
// into an api.Pod whose environment values and file contents are filled
// in, with Kubernetes' semantics (the kubelet's makeEnvironmentVariables,
// the configMap, secret, projected and downwardAPI volume plugins, the
// downward API's field and resource selectors, image pull secrets).
//
// It also owns the pod's hash. The hash is taken over the pod as written,
// before any reference is resolved, so a changed ConfigMap or Secret does
// not change it: the agent updates mounted files in place and containers
// see new environment values at their next start. TemplateHash is the
// same function for a workload's template, so the workload controllers
// and this package agree on revisions, and References says which pods see
// a changed ConfigMap or Secret in place and which only after a restart,
// so a plan can say it.
//
// Everything here is pure: no I/O, no clock. Secret values never appear
// in errors, warnings or the fmt output of this package's types.
package resolve
