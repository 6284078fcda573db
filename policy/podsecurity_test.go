package policy_test

import (
	"fmt"
	"strings"
	"testing"

	"berth.dev/berth/policy"
)

// Pod specs, as they appear under a Pod's spec:.
const (
	// plainSpec sets nothing about security: baseline allows it,
	// restricted does not.
	plainSpec = `
containers:
  - name: app
    image: app:v1
`
	// restrictedSpec passes every level.
	restrictedSpec = `
securityContext:
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
containers:
  - name: app
    image: app:v1
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
`
	privilegedSpec = `
containers:
  - name: app
    image: app:v1
    securityContext:
      privileged: true
`
	hostPathSpec = `
containers:
  - name: app
    image: app:v1
    volumeMounts:
      - name: host
        mountPath: /host
volumes:
  - name: host
    hostPath:
      path: /var/run
`
	hostNetworkSpec = `
hostNetwork: true
containers:
  - name: app
    image: app:v1
`
	// restrictedNoRunAsNonRoot is restrictedSpec less runAsNonRoot.
	restrictedNoRunAsNonRoot = `
securityContext:
  seccompProfile:
    type: RuntimeDefault
containers:
  - name: app
    image: app:v1
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
`
	// restrictedRunAsNonRootFalse has a container that opts out.
	restrictedRunAsNonRootFalse = `
securityContext:
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
containers:
  - name: app
    image: app:v1
    securityContext:
      runAsNonRoot: false
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
`
	// addsCapability passes restricted but for one added capability.
	addsCapability = `
securityContext:
  runAsNonRoot: true
  seccompProfile:
    type: RuntimeDefault
containers:
  - name: app
    image: app:v1
    securityContext:
      allowPrivilegeEscalation: false
      capabilities:
        drop: [ALL]
        add: [SYS_ADMIN]
`
)

// podRepo is a repository with Namespace ns (with the given labels; none
// declares no Namespace) and a Pod in it running spec.
func podRepo(ns string, labels map[string]string, spec string) map[string]string {
	files := map[string]string{
		"cluster.yaml": checklistOff,
		"pod.yaml":     fmt.Sprintf("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: %s\nspec:\n%s", ns, indent(spec, 2)),
	}
	if labels != nil {
		var b strings.Builder
		fmt.Fprintf(&b, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n", ns)
		for k, v := range labels {
			fmt.Fprintf(&b, "    %s: %q\n", k, v)
		}
		files["ns.yaml"] = b.String()
	}
	return files
}

const (
	enforce        = "pod-security.kubernetes.io/enforce"
	enforceVersion = "pod-security.kubernetes.io/enforce-version"
	warnLabel      = "pod-security.kubernetes.io/warn"
	audit          = "pod-security.kubernetes.io/audit"
)

func TestPodSecurityLevels(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		spec   string
		want   []want
	}{
		{"privileged allows a privileged container", map[string]string{enforce: "privileged"}, privilegedSpec, nil},
		{"baseline allows a plain pod", map[string]string{enforce: "baseline"}, plainSpec, nil},
		{"baseline denies a privileged container", map[string]string{enforce: "baseline"}, privilegedSpec, []want{{
			rule: "pod-security", action: "deny", object: "Pod team/p",
			field: "spec.containers[0].securityContext.privileged", pos: "pod.yaml:12:9",
			message: []string{`violates PodSecurity "baseline:latest": privileged (container "app" must not set securityContext.privileged=true); set by label pod-security.kubernetes.io/enforce of Namespace team`},
		}}},
		{"baseline denies a hostPath volume", map[string]string{enforce: "baseline"}, hostPathSpec, []want{{
			rule: "pod-security", action: "deny", field: "spec.volumes[0].hostPath", pos: "pod.yaml:16:7",
			message: []string{`violates PodSecurity "baseline:latest": hostPath volumes (volume "host")`},
		}}},
		{"baseline denies the host network", map[string]string{enforce: "baseline"}, hostNetworkSpec, []want{{
			rule: "pod-security", action: "deny", field: "spec.hostNetwork", pos: "pod.yaml:8:3",
			message: []string{`host namespaces (hostNetwork=true)`},
		}}},
		{"baseline denies an added capability", map[string]string{enforce: "baseline"}, addsCapability, []want{{
			rule: "pod-security", action: "deny", field: "spec.containers[0].securityContext.capabilities.add",
			message: []string{`non-default capabilities (container "app" must not include "SYS_ADMIN" in securityContext.capabilities.add)`},
		}}},
		{"restricted allows a hardened pod", map[string]string{enforce: "restricted"}, restrictedSpec, nil},
		{"restricted denies a plain pod, naming every check", map[string]string{enforce: "restricted"}, plainSpec, []want{{
			rule: "pod-security", action: "deny", field: "spec",
			message: []string{
				`violates PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "app" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "app" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "app" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")`,
			},
		}}},
		{"restricted denies a missing runAsNonRoot", map[string]string{enforce: "restricted"}, restrictedNoRunAsNonRoot, []want{{
			rule: "pod-security", action: "deny", field: "spec.securityContext.runAsNonRoot", pos: "pod.yaml:8:3",
			message: []string{`violates PodSecurity "restricted:latest": runAsNonRoot != true (pod or container "app" must set securityContext.runAsNonRoot=true); set by`},
		}}},
		{"restricted denies runAsNonRoot false", map[string]string{enforce: "restricted"}, restrictedRunAsNonRootFalse, []want{{
			rule: "pod-security", action: "deny", field: "spec.containers[0].securityContext.runAsNonRoot", pos: "pod.yaml:16:9",
			message: []string{`runAsNonRoot != true (container "app" must not set securityContext.runAsNonRoot=false)`},
		}}},
		{"restricted denies an added capability", map[string]string{enforce: "restricted"}, addsCapability, []want{{
			rule: "pod-security", action: "deny", field: "spec.containers[0].securityContext.capabilities.add", pos: "pod.yaml:19:11",
			message: []string{`unrestricted capabilities (container "app" must not include "SYS_ADMIN" in securityContext.capabilities.add)`},
		}}},
		{"a pinned version is named", map[string]string{enforce: "restricted", enforceVersion: "v1.24"}, plainSpec, []want{{
			rule: "pod-security", action: "deny", field: "spec",
			message: []string{`violates PodSecurity "restricted:v1.24": `},
		}}},
		{"warn warns", map[string]string{warnLabel: "restricted"}, plainSpec, []want{{
			rule: "pod-security", action: "warn", field: "spec",
			message: []string{`would violate PodSecurity "restricted:latest": `, "; set by label pod-security.kubernetes.io/warn of Namespace team"},
		}}},
		{"audit warns", map[string]string{audit: "baseline"}, privilegedSpec, []want{{
			rule: "pod-security", action: "warn", field: "spec.containers[0].securityContext.privileged",
			message: []string{`would violate PodSecurity "baseline:latest": privileged`, "; set by label pod-security.kubernetes.io/audit of Namespace team"},
		}}},
		{"warn and audit at one level warn once", map[string]string{warnLabel: "restricted", audit: "restricted"}, plainSpec, []want{{
			rule: "pod-security", action: "warn", field: "spec",
			message: []string{"; set by labels pod-security.kubernetes.io/warn and pod-security.kubernetes.io/audit of Namespace team"},
		}}},
		{"warn and audit at two levels warn twice", map[string]string{warnLabel: "restricted", audit: "baseline"}, privilegedSpec, []want{
			{rule: "pod-security", action: "warn", field: "spec", message: []string{`"restricted:latest"`, "label pod-security.kubernetes.io/warn "}},
			{rule: "pod-security", action: "warn", field: "spec.containers[0].securityContext.privileged", message: []string{`"baseline:latest"`, "label pod-security.kubernetes.io/audit "}},
		}},
		{"warn beyond a passing enforce", map[string]string{enforce: "baseline", warnLabel: "restricted"}, plainSpec, []want{{
			rule: "pod-security", action: "warn", field: "spec", message: []string{`would violate PodSecurity "restricted:latest"`},
		}}},
		{"no warning once enforce denies", map[string]string{enforce: "restricted", warnLabel: "restricted", audit: "restricted"}, plainSpec, []want{{
			rule: "pod-security", action: "deny", field: "spec", message: []string{`"restricted:latest"`},
		}}},
		{"an explicit privileged warn level is quiet", map[string]string{enforce: "privileged", warnLabel: "privileged"}, privilegedSpec, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, evaluate(t, podRepo("team", tt.labels, tt.spec)), tt.want)
		})
	}
}

func TestPodSecurityImplicitNamespaces(t *testing.T) {
	for _, ns := range []string{"default", "kube-system"} {
		t.Run(ns, func(t *testing.T) {
			check(t, evaluate(t, podRepo(ns, nil, privilegedSpec)), nil)
		})
	}
	t.Run("declared kube-system has its labels", func(t *testing.T) {
		got := evaluate(t, podRepo("kube-system", map[string]string{enforce: "baseline"}, privilegedSpec))
		check(t, got, []want{{rule: "pod-security", action: "deny", object: "Pod kube-system/p",
			field: "spec.containers[0].securityContext.privileged", message: []string{"of Namespace kube-system"}}})
	})
	t.Run("a namespace without labels", func(t *testing.T) {
		check(t, evaluate(t, podRepo("team", map[string]string{"team": "a"}, privilegedSpec)), nil)
	})
}

func TestPodSecurityInvalidLabels(t *testing.T) {
	tests := []struct {
		name   string
		labels map[string]string
		want   []want
	}{
		{"unknown level", map[string]string{enforce: "restrcted"}, []want{{
			rule: "pod-security", action: "deny", object: "Namespace team",
			field: "metadata.labels[pod-security.kubernetes.io/enforce]", pos: "ns.yaml:6:5",
			message: []string{`invalid Pod Security level "restrcted" in label pod-security.kubernetes.io/enforce: must be one of privileged, baseline, restricted`},
		}}},
		{"unknown version, evaluated at latest", map[string]string{enforce: "baseline", enforceVersion: "1.30"}, []want{
			{
				rule: "pod-security", action: "deny", object: "Namespace team",
				field:   "metadata.labels[pod-security.kubernetes.io/enforce-version]",
				message: []string{`invalid Pod Security version "1.30" in label pod-security.kubernetes.io/enforce-version: must be "latest" or "v1.x"`},
			},
			{rule: "pod-security", action: "deny", object: "Pod team/p", field: "spec.containers[0].securityContext.privileged", message: []string{`"baseline:latest"`}},
		}},
		{"unknown warn level", map[string]string{warnLabel: "strict"}, []want{{
			rule: "pod-security", action: "deny", field: "metadata.labels[pod-security.kubernetes.io/warn]", message: []string{`"strict"`},
		}}},
		{"unknown label", map[string]string{"pod-security.kubernetes.io/enforcing": "baseline"}, []want{{
			rule: "pod-security", action: "warn", field: "metadata.labels[pod-security.kubernetes.io/enforcing]",
			message: []string{"unknown Pod Security label pod-security.kubernetes.io/enforcing"},
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := evaluate(t, podRepo("team", tt.labels, privilegedSpec))
			check(t, got, tt.want)
			if !policy.Denied(got) && tt.want[0].action == "deny" {
				t.Error("Denied = false")
			}
		})
	}
}

// TestPodSecurityKinds checks that the pod template of every kind that runs
// pods is evaluated, and that the violation points into it.
func TestPodSecurityKinds(t *testing.T) {
	container := indent(`containers:
  - name: app
    image: app:v1
    securityContext:
      privileged: true
`, 6)
	tmpl := "  template:\n    metadata:\n      labels: {app: a}\n    spec:\n%s"
	tests := []struct {
		kind, doc, field string
	}{
		{"Deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a, namespace: team}\nspec:\n  selector: {matchLabels: {app: a}}\n" + fmt.Sprintf(tmpl, container),
			"spec.template.spec.containers[0].securityContext.privileged"},
		{"StatefulSet", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a, namespace: team}\nspec:\n  serviceName: a\n  selector: {matchLabels: {app: a}}\n" + fmt.Sprintf(tmpl, container) +
			"---\napiVersion: v1\nkind: Service\nmetadata: {name: a, namespace: team}\nspec:\n  clusterIP: None\n  selector: {app: a}\n  ports: [{port: 80}]\n",
			"spec.template.spec.containers[0].securityContext.privileged"},
		{"DaemonSet", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a, namespace: team}\nspec:\n  selector: {matchLabels: {app: a}}\n" + fmt.Sprintf(tmpl, container),
			"spec.template.spec.containers[0].securityContext.privileged"},
		{"Job", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: a, namespace: team}\nspec:\n" + fmt.Sprintf(tmpl, "      restartPolicy: Never\n"+container),
			"spec.template.spec.containers[0].securityContext.privileged"},
		{"CronJob", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: a, namespace: team}\nspec:\n  schedule: \"@daily\"\n  jobTemplate:\n    spec:\n" + indent(fmt.Sprintf(tmpl, "      restartPolicy: OnFailure\n"+container), 4),
			"spec.jobTemplate.spec.template.spec.containers[0].securityContext.privileged"},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			got := evaluate(t, map[string]string{
				"cluster.yaml":  checklistOff,
				"ns.yaml":       "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels:\n    pod-security.kubernetes.io/enforce: baseline\n",
				"workload.yaml": tt.doc,
			})
			check(t, got, []want{{
				rule: "pod-security", action: "deny", object: tt.kind + " team/a", field: tt.field,
				message: []string{`would violate PodSecurity "baseline:latest": privileged (container "app" must not set securityContext.privileged=true)`},
			}})
		})
	}
}
