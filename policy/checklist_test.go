package policy_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"berth.dev/berth/policy"
)

const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// goodDeployment passes every checklist rule. Tests break it one line at a
// time.
const goodDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: app
spec:
  replicas: 3
  selector:
    matchLabels: {app: app}
  template:
    metadata:
      labels: {app: app}
    spec:
      serviceAccountName: app
      containers:
        - name: app
          image: registry.example/app:v1@` + digest + `
          resources:
            requests: {cpu: 100m, memory: 64Mi}
            limits: {memory: 128Mi}
          readinessProbe:
            httpGet: {path: /ready, port: 8080}
          livenessProbe:
            httpGet: {path: /live, port: 8080}
          securityContext:
            runAsNonRoot: true
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities:
              drop: [ALL]
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: app
`

// edit applies old→new replacements to s, failing if one does not apply.
func edit(t *testing.T, s string, pairs ...string) string {
	t.Helper()
	for i := 0; i+1 < len(pairs); i += 2 {
		if !strings.Contains(s, pairs[i]) {
			t.Fatalf("edit: %q not found", pairs[i])
		}
		s = strings.Replace(s, pairs[i], pairs[i+1], 1)
	}
	return s
}

const c0 = "spec.template.spec.containers[0]"

func TestChecklistRules(t *testing.T) {
	tests := []struct {
		name  string
		edits []string
		extra string // more documents
		want  []want
	}{
		{name: "a good deployment passes"},
		{name: "replicas: 1", edits: []string{"replicas: 3", "replicas: 1"}, want: []want{{
			rule: "replicas", action: "warn", object: "Deployment default/app", field: "spec.replicas", pos: "app.yaml:6:3",
			message: []string{"runs 1 replica: set spec.replicas to 2 or more"},
		}}},
		{name: "replicas left to the default", edits: []string{"  replicas: 3\n", ""}, want: []want{{
			rule: "replicas", action: "warn", field: "spec.replicas", pos: "app.yaml:5:1", message: []string{"runs 1 replica"},
		}}},
		{name: "an autoscaler's minReplicas decides", edits: []string{"replicas: 3", "replicas: 1"}, extra: hpa(2), want: nil},
		{name: "an autoscaler down to one replica", edits: []string{"replicas: 3", "replicas: 1"}, extra: hpa(1), want: []want{{
			rule: "replicas", action: "warn", object: "HorizontalPodAutoscaler default/app", field: "spec.minReplicas",
			message: []string{"scales Deployment default/app down to 1 replica: set spec.minReplicas to 2 or more"},
		}}},
		{name: "no resources", edits: []string{"          resources:\n            requests: {cpu: 100m, memory: 64Mi}\n            limits: {memory: 128Mi}\n", ""}, want: []want{{
			rule: "resources", action: "warn", field: c0 + ".resources", pos: "app.yaml:15:11",
			message: []string{`container "app" does not set resources.requests.cpu, resources.requests.memory and resources.limits.memory`},
		}}},
		{name: "no memory limit", edits: []string{"            limits: {memory: 128Mi}\n", ""}, want: []want{{
			rule: "resources", action: "warn", field: c0 + ".resources.limits.memory", pos: "app.yaml:17:11",
			message: []string{`container "app" does not set resources.limits.memory:`},
		}}},
		{name: "no requests (the memory limit stands for the memory request)", edits: []string{"            requests: {cpu: 100m, memory: 64Mi}\n", ""}, want: []want{{
			rule: "resources", action: "warn", field: c0 + ".resources.requests.cpu", pos: "app.yaml:17:11",
			message: []string{`container "app" does not set resources.requests.cpu:`},
		}}},
		{name: "limits stand for requests", edits: []string{"            requests: {cpu: 100m, memory: 64Mi}\n            limits: {memory: 128Mi}\n", "            limits: {cpu: 1, memory: 128Mi}\n"}},
		{name: "no readinessProbe", edits: []string{"          readinessProbe:\n            httpGet: {path: /ready, port: 8080}\n", ""}, want: []want{{
			rule: "probes", action: "warn", field: c0 + ".readinessProbe", pos: "app.yaml:15:11",
			message: []string{`container "app" has no readinessProbe: set readinessProbe, so that it receives traffic only when ready`},
		}}},
		{name: "no probes", edits: []string{"          readinessProbe:\n            httpGet: {path: /ready, port: 8080}\n          livenessProbe:\n            httpGet: {path: /live, port: 8080}\n", ""}, want: []want{{
			rule: "probes", action: "warn", field: c0,
			message: []string{`container "app" has no readinessProbe and no livenessProbe: set readinessProbe, so that it receives traffic only when ready, and livenessProbe, so that it is restarted when it hangs`},
		}}},
		{name: "no runAsNonRoot", edits: []string{"            runAsNonRoot: true\n", ""}, want: []want{{
			rule: "runAsNonRoot", action: "warn", field: c0 + ".securityContext.runAsNonRoot", pos: "app.yaml:24:11",
			message: []string{`container "app" may run as root: set securityContext.runAsNonRoot: true`},
		}}},
		{name: "runAsNonRoot false", edits: []string{"runAsNonRoot: true", "runAsNonRoot: false"}, want: []want{{
			rule: "runAsNonRoot", action: "warn", field: c0 + ".securityContext.runAsNonRoot", pos: "app.yaml:25:13",
			message: []string{`may run as root (runAsNonRoot: false)`},
		}}},
		{name: "runAsNonRoot from the pod", edits: []string{"            runAsNonRoot: true\n", "", "      serviceAccountName: app\n", "      serviceAccountName: app\n      securityContext:\n        runAsNonRoot: true\n"}},
		{name: "a non-zero runAsUser", edits: []string{"runAsNonRoot: true", "runAsUser: 1000"}},
		{name: "runAsUser 0", edits: []string{"runAsNonRoot: true", "runAsUser: 0"}, want: []want{{
			rule: "runAsNonRoot", action: "warn", field: c0 + ".securityContext.runAsUser", pos: "app.yaml:25:13",
			message: []string{`container "app" runs as root (runAsUser: 0)`},
		}}},
		{name: "a pod's runAsUser 0", edits: []string{"            runAsNonRoot: true\n", "", "      serviceAccountName: app\n", "      serviceAccountName: app\n      securityContext:\n        runAsUser: 0\n"}, want: []want{{
			rule: "runAsNonRoot", action: "warn", field: "spec.template.spec.securityContext.runAsUser", pos: "app.yaml:15:9",
			message: []string{`runs as root (runAsUser: 0)`},
		}}},
		{name: "writable root filesystem", edits: []string{"readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false"}, want: []want{{
			rule: "readOnlyRootFilesystem", action: "warn", field: c0 + ".securityContext.readOnlyRootFilesystem", pos: "app.yaml:26:13",
			message: []string{`container "app" can write to its root filesystem: set securityContext.readOnlyRootFilesystem: true`},
		}}},
		{name: "no allowPrivilegeEscalation", edits: []string{"            allowPrivilegeEscalation: false\n", ""}, want: []want{{
			rule: "allowPrivilegeEscalation", action: "warn", field: c0 + ".securityContext.allowPrivilegeEscalation", pos: "app.yaml:24:11",
			message: []string{`container "app" does not set securityContext.allowPrivilegeEscalation: false`},
		}}},
		{name: "allowPrivilegeEscalation true", edits: []string{"allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"}, want: []want{{
			rule: "allowPrivilegeEscalation", action: "warn", field: c0 + ".securityContext.allowPrivilegeEscalation", pos: "app.yaml:27:13",
			message: []string{`sets allowPrivilegeEscalation: true instead of securityContext.allowPrivilegeEscalation: false`},
		}}},
		{name: "capabilities not all dropped", edits: []string{"drop: [ALL]", "drop: [NET_RAW]"}, want: []want{{
			rule: "dropAllCapabilities", action: "warn", field: c0 + ".securityContext.capabilities.drop", pos: "app.yaml:29:15",
			message: []string{`container "app" keeps the runtime's default capabilities: set securityContext.capabilities.drop: ["ALL"]`},
		}}},
		{name: "image by tag", edits: []string{"@" + digest, ""}, want: []want{{
			rule: "imageDigest", action: "warn", field: c0 + ".image", pos: "app.yaml:16:11",
			message: []string{`image "registry.example/app:v1" of container "app" is not pinned by digest: pin it as name@sha256:<64 hex digits>`},
		}}},
		{name: "image with a short digest", edits: []string{digest, "sha256:abc"}, want: []want{{
			rule: "imageDigest", action: "warn", field: c0 + ".image", message: []string{`has a malformed digest "sha256:abc"`},
		}}},
		{name: "no serviceAccountName", edits: []string{"      serviceAccountName: app\n", ""}, want: []want{{
			rule: "serviceAccount", action: "warn", field: "spec.template.spec.serviceAccountName", pos: "app.yaml:12:5",
			message: []string{"its pods run as the namespace's default ServiceAccount: set serviceAccountName"},
		}}},
		{name: "the default ServiceAccount", edits: []string{"serviceAccountName: app", "serviceAccountName: default"}, want: []want{{
			rule: "serviceAccount", action: "warn", field: "spec.template.spec.serviceAccountName", pos: "app.yaml:13:7",
		}}},
		{name: "an init container is checked too", edits: []string{"      containers:\n", "      initContainers:\n        - name: setup\n          image: busybox:1.36@" + digest + "\n      containers:\n"}, want: []want{
			{rule: "resources", action: "warn", field: "spec.template.spec.initContainers[0].resources", message: []string{`init container "setup" does not set`}},
			{rule: "runAsNonRoot", action: "warn", field: "spec.template.spec.initContainers[0].securityContext.runAsNonRoot", message: []string{`init container "setup" may run as root`}},
			{rule: "readOnlyRootFilesystem", action: "warn", field: "spec.template.spec.initContainers[0].securityContext.readOnlyRootFilesystem"},
			{rule: "allowPrivilegeEscalation", action: "warn", field: "spec.template.spec.initContainers[0].securityContext.allowPrivilegeEscalation"},
			{rule: "dropAllCapabilities", action: "warn", field: "spec.template.spec.initContainers[0].securityContext.capabilities.drop"},
		}},
		{name: "one violation per container", edits: []string{"      containers:\n", "      containers:\n        - name: second\n          image: b@" + digest + "\n" +
			"          resources: {requests: {cpu: 1, memory: 1Gi}, limits: {memory: 1Gi}}\n" +
			"          readinessProbe: {tcpSocket: {port: 1}}\n          livenessProbe: {tcpSocket: {port: 1}}\n" +
			"          securityContext: {runAsNonRoot: true, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {drop: [NET_RAW]}}\n",
			"drop: [ALL]", "drop: [CHOWN]"}, want: []want{
			{rule: "dropAllCapabilities", action: "warn", field: "spec.template.spec.containers[0].securityContext.capabilities.drop", message: []string{`container "second"`}},
			{rule: "dropAllCapabilities", action: "warn", field: "spec.template.spec.containers[1].securityContext.capabilities.drop", message: []string{`container "app"`}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := edit(t, goodDeployment, tt.edits...)
			files := map[string]string{"app.yaml": doc}
			if tt.extra != "" {
				files["extra.yaml"] = tt.extra
			}
			check(t, evaluate(t, files), tt.want)
		})
	}
}

func hpa(min int) string {
	return `apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: app
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  minReplicas: ` + strconv.Itoa(min) + `
  maxReplicas: 5
`
}

// TestChecklistKinds checks which kinds each rule applies to.
func TestChecklistKinds(t *testing.T) {
	// A bare container: every per-container rule fires, probes only for
	// long-running pods, replicas only for Deployments and StatefulSets.
	container := "      containers:\n        - name: c\n          image: c:v1\n"
	tmpl := "  template:\n    metadata:\n      labels: {app: a}\n    spec:\n      serviceAccountName: sa\n%s"
	perContainer := []string{"allowPrivilegeEscalation", "dropAllCapabilities", "imageDigest", "readOnlyRootFilesystem", "resources", "runAsNonRoot"}
	tests := []struct {
		kind, doc string
		rules     []string
	}{
		{"Pod", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  serviceAccountName: sa\n  containers:\n    - name: c\n      image: c:v1\n",
			append([]string{"probes"}, perContainer...)},
		{"Pod that runs to completion", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  restartPolicy: Never\n  serviceAccountName: sa\n  containers:\n    - name: c\n      image: c:v1\n",
			perContainer},
		{"Deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: a}}\n" + fmt.Sprintf(tmpl, container),
			append([]string{"probes", "replicas"}, perContainer...)},
		{"StatefulSet", "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: a}\nspec:\n  serviceName: a\n  replicas: 1\n  selector: {matchLabels: {app: a}}\n" + fmt.Sprintf(tmpl, container) +
			"---\napiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: None\n  selector: {app: a}\n  ports: [{port: 80}]\n",
			append([]string{"probes", "replicas"}, perContainer...)},
		{"DaemonSet", "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {app: a}}\n" + fmt.Sprintf(tmpl, container),
			append([]string{"probes"}, perContainer...)},
		{"Job", "apiVersion: batch/v1\nkind: Job\nmetadata: {name: a}\nspec:\n" + fmt.Sprintf(tmpl, "      restartPolicy: Never\n"+container),
			perContainer},
		{"CronJob", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: a}\nspec:\n  schedule: \"@daily\"\n  jobTemplate:\n    spec:\n" + indent(fmt.Sprintf(tmpl, "      restartPolicy: OnFailure\n"+container), 4),
			perContainer},
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			got := evaluate(t, map[string]string{
				"a.yaml":  tt.doc,
				"sa.yaml": "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa}\n",
			})
			var rules []string
			for _, v := range got {
				rules = append(rules, v.Rule)
			}
			slices.Sort(rules)
			wantRules := slices.Sorted(slices.Values(tt.rules))
			if !slices.Equal(rules, wantRules) {
				t.Errorf("rules fired:\n got %v\nwant %v", rules, wantRules)
			}
		})
	}
}

func TestChecklistConfig(t *testing.T) {
	bad := edit(t, goodDeployment, "replicas: 3", "replicas: 1", "@"+digest, "")
	cluster := func(entries string) string {
		return "apiVersion: berth.dev/v1alpha1\nkind: Cluster\nmetadata:\n  name: c\nspec:\n  policy:\n    checklist:\n" + indent(entries, 6)
	}
	tests := []struct {
		name, config string
		want         []want
		denied       bool
	}{
		{"warn by default", "", []want{
			{rule: "replicas", action: "warn", field: "spec.replicas"},
			{rule: "imageDigest", action: "warn", field: c0 + ".image"},
		}, false},
		{"off", cluster("replicas: off\nimageDigest: warn\n"), []want{
			{rule: "imageDigest", action: "warn", field: c0 + ".image"},
		}, false},
		{"deny", cluster("replicas: deny\n"), []want{
			{rule: "replicas", action: "deny", field: "spec.replicas"},
			{rule: "imageDigest", action: "warn", field: c0 + ".image"},
		}, true},
		{"unknown rule", cluster("replicas: off\nimageDigest: off\nreplica: deny\nrunasnonroot: off\n"), []want{
			{
				rule: "checklist", action: "deny", object: "Cluster c", field: "spec.policy.checklist[replica]", pos: "cluster.yaml:10:7",
				message: []string{`unknown checklist rule "replica"; the rules are allowPrivilegeEscalation, dropAllCapabilities, imageDigest, probes, readOnlyRootFilesystem, replicas, resources, runAsNonRoot, serviceAccount`},
			},
			{
				rule: "checklist", action: "deny", object: "Cluster c", field: "spec.policy.checklist[runasnonroot]", pos: "cluster.yaml:11:7",
				message: []string{`unknown checklist rule "runasnonroot" (did you mean runAsNonRoot?); the rules are`},
			},
		}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			files := map[string]string{"app.yaml": bad}
			if tt.config != "" {
				files["cluster.yaml"] = tt.config
			}
			got := evaluate(t, files)
			check(t, got, tt.want)
			if policy.Denied(got) != tt.denied {
				t.Errorf("Denied = %v, want %v", !tt.denied, tt.denied)
			}
		})
	}
}
