package reconciler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"

	"berth.dev/berth/render"
)

// load renders a repository of one file per document and fails the test
// on error diagnostics, so that every case plans valid input.
func load(t testing.TB, docs ...string) *render.Desired {
	t.Helper()
	fsys := fstest.MapFS{}
	for i, d := range docs {
		fsys[fmt.Sprintf("doc%02d.yaml", i)] = &fstest.MapFile{Data: []byte(d)}
	}
	d, err := render.Load(context.Background(), fsys, render.Options{})
	if err != nil {
		t.Fatalf("render.Load: %v", err)
	}
	if d.Diagnostics.HasErrors() {
		t.Fatalf("test repository is invalid: %v", d.Diagnostics.Err())
	}
	return d
}

// deploy is a Deployment named web with a selector, a template and a
// container web; extra is YAML spliced into the spec, tmpl into the pod
// spec.
func deploy(replicas int, image, extra, tmpl string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: %d
  selector:
    matchLabels: {app: web}
%s  template:
    metadata:
      labels: {app: web}
    spec:
%s      containers:
      - name: web
        image: %s
`, replicas, indent(extra, 2), indent(tmpl, 6), image)
}

func indent(s string, n int) string {
	if s == "" {
		return ""
	}
	pad := strings.Repeat(" ", n)
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	for i := range lines {
		lines[i] = pad + lines[i]
	}
	return strings.Join(lines, "\n") + "\n"
}

func pod(containers string, extra string) string {
	return `apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
` + indent(extra, 2) + `  containers:
` + indent(containers, 2)
}

func TestDiffActions(t *testing.T) {
	web := deploy(3, "nginx:1.27", "", "")
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n"
	from := load(t, web, svc)
	to := load(t, deploy(5, "nginx:1.27", "", ""), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg}\ndata: {a: b}\n")
	got := Diff(from, to)
	want := []Change{
		{Action: ActionCreate, APIVersion: "v1", Kind: "ConfigMap", Namespace: "default", Name: "cfg",
			Pos: render.Pos{File: "doc01.yaml", Line: 1, Column: 1}},
		{Action: ActionDelete, APIVersion: "v1", Kind: "Service", Namespace: "default", Name: "web",
			Pos: render.Pos{File: "doc01.yaml", Line: 1, Column: 1}},
		{Action: ActionUpdate, APIVersion: "apps/v1", Kind: "Deployment", Namespace: "default", Name: "web",
			Pos:         render.Pos{File: "doc00.yaml", Line: 1, Column: 1},
			Fields:      []FieldChange{{Path: "spec.replicas", Op: OpChange, Before: int64(3), After: int64(5)}},
			Consequence: "scale 3 → 5"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("Diff (-want +got):\n%s", d)
	}
	if s := Summarize(got); s != (Summary{Add: 1, Change: 1, Destroy: 1}) {
		t.Errorf("Summarize = %+v", s)
	}

	// Nil and empty sides.
	if got := Diff(nil, nil); len(got) != 0 {
		t.Errorf("Diff(nil, nil) = %v", got)
	}
	if got := Diff(nil, from); len(got) != 2 || got[0].Action != ActionCreate || got[0].Kind != "Service" || got[1].Consequence != "3 pods start" {
		t.Errorf("Diff(nil, from) = %+v", got)
	}
	if got := Diff(from, &render.Desired{}); len(got) != 2 || got[1].Action != ActionDelete || got[1].Consequence != "3 pods stop" {
		t.Errorf("Diff(from, empty) = %+v", got)
	}
	if got := Diff(from, from); len(got) != 0 {
		t.Errorf("Diff(from, from) = %+v", got)
	}
}

// diffOne plans from → to, each one object, and returns the change.
func diffOne(t *testing.T, from, to string) Change {
	t.Helper()
	changes := Diff(load(t, from), load(t, to))
	if len(changes) != 1 {
		t.Fatalf("want one change, got %d: %+v", len(changes), changes)
	}
	return changes[0]
}

func paths(c Change) []string {
	var ps []string
	for _, f := range c.Fields {
		ps = append(ps, f.Path)
	}
	return ps
}

func TestDiffFields(t *testing.T) {
	pullSecrets := ""
	for _, n := range []string{"a", "b"} {
		pullSecrets += "---\napiVersion: v1\nkind: Secret\nmetadata: {name: " + n + "}\ntype: kubernetes.io/dockerconfigjson\nstringData: {.dockerconfigjson: '{}'}\n"
	}
	for _, tc := range []struct {
		name     string
		from, to string
		want     []FieldChange
	}{{
		name: "label added, label changed",
		from: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {a: x}}\n",
		to:   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, labels: {a: y, app.kubernetes.io/name: c}}\n",
		want: []FieldChange{
			{Path: "metadata.labels[a]", Op: OpChange, Before: "x", After: "y"},
			{Path: "metadata.labels[app.kubernetes.io/name]", Op: OpAdd, After: "c"},
		},
	}, {
		name: "container inserted before another is matched by name",
		from: deploy(1, "nginx:1.27", "", ""),
		to: strings.Replace(deploy(1, "nginx:1.27", "", ""), "      containers:\n",
			"      containers:\n      - name: aaa-first\n        image: busybox:1.36\n", 1),
		want: nil, // checked below: only containers[name=aaa-first] paths
	}, {
		name: "env inserted and changed by name",
		from: pod("- name: c\n  image: busybox:1.36\n  env: [{name: A, value: '1'}, {name: B, value: '2'}]\n", ""),
		to:   pod("- name: c\n  image: busybox:1.36\n  env: [{name: Z, value: '0'}, {name: A, value: '1'}, {name: B, value: '3'}]\n", ""),
		want: []FieldChange{
			{Path: "spec.containers[name=c].env[name=Z].name", Op: OpAdd, After: "Z"},
			{Path: "spec.containers[name=c].env[name=Z].value", Op: OpAdd, After: "0"},
			{Path: "spec.containers[name=c].env[name=B].value", Op: OpChange, Before: "2", After: "3"},
		},
	}, {
		name: "ports by containerPort",
		from: pod("- name: c\n  image: busybox:1.36\n  ports: [{containerPort: 80, name: http}]\n", ""),
		to:   pod("- name: c\n  image: busybox:1.36\n  ports: [{containerPort: 443, name: https}, {containerPort: 80, name: web}]\n", ""),
		want: []FieldChange{
			{Path: "spec.containers[name=c].ports[containerPort=443].containerPort", Op: OpAdd, After: int64(443)},
			{Path: "spec.containers[name=c].ports[containerPort=443].name", Op: OpAdd, After: "https"},
			{Path: "spec.containers[name=c].ports[containerPort=443].protocol", Op: OpAdd, After: "TCP"},
			{Path: "spec.containers[name=c].ports[containerPort=80].name", Op: OpChange, Before: "http", After: "web"},
		},
	}, {
		name: "volumeMounts by mountPath, volumes by name",
		from: pod("- name: c\n  image: busybox:1.36\n  volumeMounts: [{name: a, mountPath: /a}]\n", "volumes: [{name: a, emptyDir: {}}]\n"),
		to:   pod("- name: c\n  image: busybox:1.36\n  volumeMounts: [{name: b, mountPath: /a}]\n", "volumes: [{name: b, emptyDir: {}}]\n"),
		want: []FieldChange{
			{Path: "spec.containers[name=c].volumeMounts[mountPath=/a].name", Op: OpChange, Before: "a", After: "b"},
			{Path: "spec.volumes[name=b].emptyDir", Op: OpAdd, After: map[string]any{}},
			{Path: "spec.volumes[name=b].name", Op: OpAdd, After: "b"},
			{Path: "spec.volumes[name=a].emptyDir", Op: OpRemove, Before: map[string]any{}},
			{Path: "spec.volumes[name=a].name", Op: OpRemove, Before: "a"},
		},
	}, {
		name: "service ports by port; imagePullSecrets by name",
		from: "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{name: http, port: 80}]\n",
		to:   "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  ports: [{name: https, port: 443}, {name: web, port: 80}]\n",
		want: []FieldChange{
			{Path: "spec.ports[port=443].name", Op: OpAdd, After: "https"},
			{Path: "spec.ports[port=443].port", Op: OpAdd, After: int64(443)},
			{Path: "spec.ports[port=443].protocol", Op: OpAdd, After: "TCP"},
			{Path: "spec.ports[port=443].targetPort", Op: OpAdd, After: int64(443)},
			{Path: "spec.ports[port=80].name", Op: OpChange, Before: "http", After: "web"},
		},
	}, {
		name: "a merge key that is not unique falls back to index",
		from: "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53}]\n",
		to:   "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  ports: [{name: dns, port: 53, protocol: UDP}, {name: dns-tcp, port: 53, targetPort: 5353}]\n",
		want: []FieldChange{
			{Path: "spec.ports[1].targetPort", Op: OpChange, Before: int64(53), After: int64(5353)},
		},
	}, {
		name: "imagePullSecrets by name",
		from: pod("- name: c\n  image: busybox:1.36\n", "imagePullSecrets: [{name: a}]\n") + pullSecrets,
		to:   pod("- name: c\n  image: busybox:1.36\n", "imagePullSecrets: [{name: b}, {name: a}]\n") + pullSecrets,
		want: []FieldChange{
			{Path: "spec.imagePullSecrets[name=b].name", Op: OpAdd, After: "b"},
		},
	}, {
		name: "list of scalars is one value",
		from: pod("- name: c\n  image: busybox:1.36\n  args: [a, b]\n", ""),
		to:   pod("- name: c\n  image: busybox:1.36\n  args: [x, a, b]\n", ""),
		want: []FieldChange{
			{Path: "spec.containers[name=c].args", Op: OpChange, Before: []any{"a", "b"}, After: []any{"x", "a", "b"}},
		},
	}, {
		name: "list without merge key by index",
		from: "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 80}]}]\n",
		to:   "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 81}]}]\n",
		want: []FieldChange{
			{Path: "spec.ingress[0].ports[0].port", Op: OpChange, Before: int64(80), After: int64(81)},
		},
	}, {
		name: "keyed items reordered",
		from: pod("- name: c\n  image: busybox:1.36\n  env: [{name: A, value: '1'}, {name: B, value: '2'}]\n", ""),
		to:   pod("- name: c\n  image: busybox:1.36\n  env: [{name: B, value: '2'}, {name: A, value: '1'}]\n", ""),
		want: []FieldChange{
			{Path: "spec.containers[name=c].env", Op: OpChange, Before: []any{"A", "B"}, After: []any{"B", "A"}},
		},
	}, {
		name: "status and creationTimestamp are not desired state",
		from: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: '1'}\n",
		to:   "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, creationTimestamp: '2024-01-01T00:00:00Z'}\ndata: {a: '2'}\n",
		want: []FieldChange{{Path: "data[a]", Op: OpChange, Before: "1", After: "2"}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			c := diffOne(t, tc.from, tc.to)
			if tc.want == nil {
				for _, p := range paths(c) {
					if !strings.HasPrefix(p, "spec.template.spec.containers[name=aaa-first].") {
						t.Errorf("unexpected path %s", p)
					}
				}
				if len(c.Fields) == 0 {
					t.Error("no fields")
				}
				return
			}
			if d := cmp.Diff(tc.want, c.Fields); d != "" {
				t.Errorf("fields (-want +got):\n%s", d)
			}
		})
	}
}

func TestDiffIgnoresStatusOnly(t *testing.T) {
	a := load(t, deploy(3, "nginx:1.27", "", ""))
	b := load(t, deploy(3, "nginx:1.27", "", "")+"status:\n  replicas: 3\n")
	if got := Diff(a, b); len(got) != 0 {
		t.Errorf("status alone must not be a change: %+v", got)
	}
}

func TestReplace(t *testing.T) {
	sts := func(serviceName, extra, image string) string {
		return `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: ` + serviceName + `
  replicas: 3
  selector: {matchLabels: {app: db}}
` + extra + `  template:
    metadata: {labels: {app: db}}
    spec:
      containers: [{name: db, image: "` + image + `"}]
`
	}
	vct := "  volumeClaimTemplates:\n  - metadata: {name: data}\n    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n"
	svc := func(spec string) string {
		return "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n" + spec
	}
	pvc := func(size, class string) string {
		return "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: " + class + "\n  resources: {requests: {storage: " + size + "}}\n" +
			"---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: example.com/csi\n" +
			"---\napiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: slow}\nprovisioner: example.com/csi\n"
	}
	cm := func(immutable, value string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nimmutable: " + immutable + "\ndata: {k: " + value + "}\n"
	}
	secret := func(typ, value string) string {
		return "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: " + typ + "\nstringData: {k: " + value + "}\n"
	}
	sc := func(param string) string {
		return "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: example.com/csi\nparameters: {type: " + param + "}\n"
	}
	rb := func(role string) string {
		return "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: rb}\nroleRef: {kind: ClusterRole, name: " + role + "}\nsubjects: [{kind: ServiceAccount, name: default}]\n"
	}
	job := func(image string) string {
		return "apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: m, image: \"" + image + "\"}]\n"
	}
	ds := func(sel string) string {
		return "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  selector: {matchLabels: {app: " + sel + "}}\n  template:\n    metadata: {labels: {app: " + sel + "}}\n    spec:\n      containers: [{name: a, image: \"agent:1\"}]\n"
	}
	webPod := func(containers, extra string) string { return pod(containers, extra) }
	c1 := "- name: web\n  image: nginx:1.27\n"

	for _, tc := range []struct {
		name, from, to    string
		action            Action
		reason, consequen string
	}{
		{"deployment selector", deploy(3, "nginx:1.27", "", ""),
			strings.ReplaceAll(deploy(3, "nginx:1.27", "", ""), "{app: web}", "{app: web2}"),
			ActionReplace, "spec.selector is immutable", "its 3 pods are deleted and created again"},
		{"daemonset selector", ds("a"), ds("b"), ActionReplace, "spec.selector is immutable", "its pod is deleted and created again on every machine"},
		{"job template", job("migrate:1"), job("migrate:2"), ActionReplace, "spec.template is immutable", "the Job is deleted and runs again"},
		{"statefulset serviceName", sts("db", "", "pg:16"), sts("db2", "", "pg:16"), ActionReplace, "spec.serviceName is immutable",
			"its 3 pods are deleted and created again; their volume claims are kept"},
		{"statefulset volumeClaimTemplates", sts("db", "", "pg:16"), sts("db", vct, "pg:16"), ActionReplace, "spec.volumeClaimTemplates is immutable",
			"its 3 pods are deleted and created again; their volume claims are kept"},
		{"statefulset podManagementPolicy", sts("db", "", "pg:16"), sts("db", "  podManagementPolicy: Parallel\n", "pg:16"), ActionReplace,
			"spec.podManagementPolicy is immutable", "its 3 pods are deleted and created again; their volume claims are kept"},
		{"statefulset template is an update", sts("db", "", "pg:16"), sts("db", "", "pg:17"), ActionUpdate, "",
			"rolling update of 3 pods from the highest ordinal"},
		{"statefulset partition", sts("db", "  updateStrategy: {rollingUpdate: {partition: 2}}\n", "pg:16"),
			sts("db", "  updateStrategy: {rollingUpdate: {partition: 2}}\n", "pg:17"), ActionUpdate, "",
			"rolling update of 3 pods from the highest ordinal, ordinals 2 and up only (partition 2)"},
		{"statefulset OnDelete", sts("db", "  updateStrategy: {type: OnDelete}\n", "pg:16"),
			sts("db", "  updateStrategy: {type: OnDelete}\n", "pg:17"), ActionUpdate, "",
			"OnDelete: 3 pods take the new template only when deleted"},
		{"service clusterIP set on both", svc("  clusterIP: 10.96.0.10\n"), svc("  clusterIP: 10.96.0.11\n"), ActionReplace,
			"spec.clusterIP is immutable", "the Service is deleted and created again; its cluster IP changes"},
		{"service clusterIP newly set", svc(""), svc("  clusterIP: 10.96.0.11\n"), ActionUpdate, "", ""},
		{"service turns headless", svc(""), svc("  clusterIP: None\n"), ActionReplace, "spec.clusterIP is immutable",
			"the Service is deleted and created again; its cluster IP changes"},
		{"service selector", svc(""), strings.Replace(svc(""), "{app: web}", "{app: api}", 1), ActionUpdate, "", "endpoints move"},
		{"pvc grows", pvc("1Gi", "fast"), pvc("2Gi", "fast"), ActionUpdate, "", ""},
		{"pvc shrinks", pvc("2Gi", "fast"), pvc("1500Mi", "fast"), ActionReplace, "spec.resources.requests[storage] can only grow",
			"a new volume replaces the old one; its data is not carried over"},
		{"pvc storage class", pvc("1Gi", "fast"), pvc("1Gi", "slow"), ActionReplace, "spec.storageClassName is immutable",
			"a new volume replaces the old one; its data is not carried over"},
		{"immutable configmap data", cm("true", "a"), cm("true", "b"), ActionReplace, "data is immutable (immutable: true)", ""},
		{"immutable configmap unset", cm("true", "a"), cm("false", "a"), ActionReplace, "immutable cannot be unset once true", ""},
		{"mutable configmap data", cm("false", "a"), cm("false", "b"), ActionUpdate, "", ""},
		{"configmap made immutable", cm("false", "a"), cm("true", "a"), ActionUpdate, "", ""},
		{"secret type", secret("Opaque", "a"), secret("example.com/token", "a"), ActionReplace, "type is immutable", ""},
		{"storageclass parameters", sc("ssd"), sc("hdd"), ActionReplace, "parameters is immutable", ""},
		{"rolebinding roleRef", rb("view"), rb("edit"), ActionReplace, "roleRef is immutable", ""},
		{"pod image", webPod(c1, ""), webPod("- name: web\n  image: nginx:1.28\n", ""), ActionUpdate, "", "container web restarts with its new image"},
		{"pod activeDeadlineSeconds", webPod(c1, ""), webPod(c1, "activeDeadlineSeconds: 60\n"), ActionUpdate, "", ""},
		{"pod toleration appended", webPod(c1, "tolerations: [{key: a, operator: Exists}]\n"),
			webPod(c1, "tolerations: [{key: a, operator: Exists}, {key: b, operator: Exists}]\n"), ActionUpdate, "", ""},
		{"pod toleration changed", webPod(c1, "tolerations: [{key: a, operator: Exists}]\n"),
			webPod(c1, "tolerations: [{key: b, operator: Exists}]\n"), ActionReplace, "spec.tolerations[0].key is immutable", "pod is deleted and created again"},
		{"pod command", webPod(c1, ""), webPod(c1+"  command: [nginx, -g, daemon off;]\n", ""), ActionReplace,
			"spec.containers[name=web].command is immutable", "pod is deleted and created again"},
		{"pod container added", webPod(c1, ""), webPod(c1+"- name: log\n  image: busybox:1.36\n", ""), ActionReplace,
			"spec.containers[name=log] cannot be added to a Pod", "pod is deleted and created again"},
		{"pod labels", webPod(c1, ""), strings.Replace(webPod(c1, ""), "name: p\n", "name: p\n  labels: {a: b}\n", 1), ActionUpdate, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := diffOne(t, tc.from, tc.to)
			if c.Action != tc.action || c.Reason != tc.reason || c.Consequence != tc.consequen {
				t.Errorf("got %s reason %q consequence %q; want %s reason %q consequence %q\nfields: %v",
					c.Action, c.Reason, c.Consequence, tc.action, tc.reason, tc.consequen, paths(c))
			}
		})
	}
}

func TestDeploymentConsequences(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		replicas               int
		strategy               string
		fromReplicas, fromTmpl int
		want                   string
	}{
		{"defaults 25% of 10: surge rounds up, unavailable down", 10, "", 10, 0, "rolling update of 10 pods: maxSurge 3, maxUnavailable 2"},
		{"defaults 25% of 3", 3, "", 3, 0, "rolling update of 3 pods: maxSurge 1, maxUnavailable 0"},
		{"fixed counts", 3, "strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n", 3, 0, "rolling update of 3 pods: maxSurge 1, maxUnavailable 0"},
		{"both resolve to 0: unavailable becomes 1", 3, "strategy: {rollingUpdate: {maxSurge: 0, maxUnavailable: 10%}}\n", 3, 0, "rolling update of 3 pods: maxSurge 0, maxUnavailable 1"},
		{"percent of 1", 1, "strategy: {rollingUpdate: {maxSurge: 50%, maxUnavailable: 50%}}\n", 1, 0, "rolling update of 1 pod: maxSurge 1, maxUnavailable 0"},
		{"recreate", 3, "strategy: {type: Recreate}\n", 3, 0, "recreate 3 pods"},
		{"scale only", 5, "", 3, -1, "scale 3 → 5"},
		{"scale and roll", 5, "strategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n", 3, 0, "rolling update of 5 pods: maxSurge 1, maxUnavailable 0 (scale 3 → 5)"},
		{"no replicas", 0, "", 0, 0, "no pod runs (replicas 0): pods take the new template when scaled up"},
		{"paused", 3, "paused: true\n", 3, 0, "rollout paused: pods keep the old template until spec.paused is false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fromImage := "nginx:1.26"
			if tc.fromTmpl < 0 {
				fromImage = "nginx:1.27"
			}
			c := diffOne(t, deploy(tc.fromReplicas, fromImage, tc.strategy, ""), deploy(tc.replicas, "nginx:1.27", tc.strategy, ""))
			if c.Action != ActionUpdate || c.Consequence != tc.want {
				t.Errorf("got %s %q, want update %q", c.Action, c.Consequence, tc.want)
			}
		})
	}
}

func TestDaemonSetConsequence(t *testing.T) {
	ds := func(image, strategy string) string {
		return "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n" + strategy + "  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      containers: [{name: a, image: \"" + image + "\"}]\n"
	}
	for _, tc := range []struct{ strategy, want string }{
		{"", "rolling update on every eligible machine (maxUnavailable 1)"},
		{"  updateStrategy: {rollingUpdate: {maxUnavailable: 10%}}\n", "rolling update on every eligible machine (maxUnavailable 10%)"},
		{"  updateStrategy: {rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}\n", "rolling update on every eligible machine (maxSurge 1, maxUnavailable 0)"},
		{"  updateStrategy: {type: OnDelete}\n", "OnDelete: pods take the new template only when deleted"},
	} {
		c := diffOne(t, ds("agent:1", tc.strategy), ds("agent:2", tc.strategy))
		if c.Consequence != tc.want {
			t.Errorf("strategy %q: got %q, want %q", tc.strategy, c.Consequence, tc.want)
		}
	}
}

func TestConfigMapConsumers(t *testing.T) {
	cm := func(v string) string {
		return "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app-config}\ndata: {k: " + v + "}\n"
	}
	mounts := deploy(2, "nginx:1.27", "", "volumes: [{name: cfg, configMap: {name: app-config}}]\n")
	mounts = strings.Replace(mounts, "image: nginx:1.27\n", "image: nginx:1.27\n        volumeMounts: [{name: cfg, mountPath: /etc/app}]\n", 1)
	envFrom := strings.ReplaceAll(deploy(1, "api:1", "", ""), "web", "api")
	envFrom = strings.Replace(envFrom, "image: api:1\n", "image: api:1\n        envFrom: [{configMapRef: {name: app-config}}]\n", 1)
	subPath := pod("- name: c\n  image: busybox:1.36\n  volumeMounts: [{name: cfg, mountPath: /etc/k, subPath: k}]\n",
		"volumes: [{name: cfg, projected: {sources: [{configMap: {name: app-config}}]}}]\n")
	keyRef := strings.Replace(pod("- name: c\n  image: busybox:1.36\n  env: [{name: K, valueFrom: {configMapKeyRef: {name: app-config, key: k}}}]\n", ""), "name: p\n", "name: q\n", 1)
	other := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: unused}\ndata: {k: a}\n"

	from := load(t, cm("a"), mounts, envFrom, subPath, keyRef, other)
	to := load(t, cm("b"), mounts, envFrom, subPath, keyRef, strings.Replace(other, "k: a", "k: b", 1))
	changes := Diff(from, to)
	if len(changes) != 2 {
		t.Fatalf("want 2 changes, got %+v", changes)
	}
	want := "files update in place for Deployment default/web; Deployment default/api, Pod default/p, Pod default/q see it only after a restart"
	if got := changes[0].Consequence; got != want {
		t.Errorf("consequence:\n got %q\nwant %q", got, want)
	}
	if got := changes[1].Consequence; got != "" {
		t.Errorf("an unused ConfigMap has no consequence, got %q", got)
	}

	// Replacing an immutable ConfigMap updates no mounted file.
	imm := func(v string) string { return strings.Replace(cm(v), "\ndata:", "\nimmutable: true\ndata:", 1) }
	changes = Diff(load(t, imm("a"), mounts), load(t, imm("b"), mounts))
	if len(changes) != 1 || changes[0].Action != ActionReplace || changes[0].Consequence != "Deployment default/web sees it only after a restart" {
		t.Errorf("immutable replace: %+v", changes)
	}
}

func TestConsumerNamesAreCapped(t *testing.T) {
	c := &consumers{restart: []string{"Pod default/a", "Pod default/b", "Pod default/c", "Pod default/d", "Pod default/e"}}
	if got, want := c.describe(false), "Pod default/a, Pod default/b, Pod default/c and 2 more see it only after a restart"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestCreateDeleteConsequences(t *testing.T) {
	sts := "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: db}\nspec:\n  serviceName: db\n  replicas: 2\n  selector: {matchLabels: {app: db}}\n  template:\n    metadata: {labels: {app: db}}\n    spec:\n      containers: [{name: db, image: \"pg:16\"}]\n"
	ns := "apiVersion: v1\nkind: Namespace\nmetadata: {name: team}\n"
	p := pod("- name: c\n  image: busybox:1.36\n", "")
	all := load(t, deploy(3, "nginx:1.27", "", ""), sts, ns, p)
	created := map[string]string{}
	for _, c := range Diff(nil, all) {
		created[c.Ref()] = c.Consequence
	}
	deleted := map[string]string{}
	for _, c := range Diff(all, nil) {
		deleted[c.Ref()] = c.Consequence
	}
	wantCreated := map[string]string{
		"Deployment default/web": "3 pods start", "StatefulSet default/db": "2 pods start, one ordinal at a time",
		"Namespace team": "", "Pod default/p": "1 pod starts",
	}
	wantDeleted := map[string]string{
		"Deployment default/web": "3 pods stop", "StatefulSet default/db": "2 pods stop; their volume claims are kept",
		"Namespace team": "everything in namespace team is deleted with it", "Pod default/p": "1 pod stops",
	}
	if d := cmp.Diff(wantCreated, created); d != "" {
		t.Errorf("created (-want +got):\n%s", d)
	}
	if d := cmp.Diff(wantDeleted, deleted); d != "" {
		t.Errorf("deleted (-want +got):\n%s", d)
	}
}

func TestUnsortedInput(t *testing.T) {
	a := load(t, deploy(1, "nginx:1.27", "", ""), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
	rev := &render.Desired{Objects: []*render.Object{a.Objects[1], a.Objects[0]}}
	if got := Diff(a, rev); len(got) != 0 {
		t.Errorf("order of Objects must not matter: %+v", got)
	}
}

func TestLineDiff(t *testing.T) {
	a := "server {\n  listen 80;\n  root /srv;\n  a;\n  b;\n  c;\n  d;\n  e;\n}\n"
	b := "server {\n  listen 8080;\n  root /srv;\n  a;\n  b;\n  c;\n  d;\n  e;\n  f;\n}\n"
	lines, ok := multiline(&FieldChange{Before: a, After: b})
	if !ok {
		t.Fatal("not shown line by line")
	}
	var got []string
	for _, l := range lines {
		got = append(got, string(l.op)+l.text)
	}
	want := []string{" server {", "-  listen 80;", "+  listen 8080;", "   root /srv;", "   a;", "~", "   d;", "   e;", "+  f;", " }"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("line diff (-want +got):\n%s", d)
	}
	if _, ok := multiline(&FieldChange{Before: "a\nb", After: "a\nb\n"}); ok {
		t.Error("a difference in the final newline alone must be shown as values")
	}
}

func TestSemanticEquality(t *testing.T) {
	res := func(cpu, image string) string {
		return strings.Replace(deploy(1, image, "", ""), "image: "+image+"\n",
			"image: "+image+"\n        resources: {requests: {cpu: "+cpu+"}}\n        args: []\n", 1)
	}
	if got := Diff(load(t, res("1000m", "nginx:1.27")), load(t, strings.Replace(res("1", "nginx:1.27"), "        args: []\n", "", 1))); len(got) != 0 {
		t.Errorf("1000m and 1 CPU, [] and no args, are the same: %+v", got)
	}
	c := diffOne(t, res("1000m", "nginx:1.27"), res("1", "nginx:1.28"))
	if d := cmp.Diff([]string{"spec.template.spec.containers[name=web].image"}, paths(c)); d != "" {
		t.Errorf("only the image changed (-want +got):\n%s", d)
	}
}
