package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"berth.dev/berth/internal/gittest"
)

// berth runs the CLI in-process and returns its exit code and output.
func berth(t *testing.T, environ map[string]string, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	e := &env{stdout: &stdout, stderr: &stderr, getenv: func(k string) string { return environ[k] }}
	code := run(context.Background(), args, e)
	return code, stdout.String(), stderr.String()
}

const (
	configMap = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web\ndata:\n  greeting: hello\n"
	secretV1  = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2-first\n"
	secretV2  = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\nstringData:\n  password: hunter2-second\n"
)

func deployment(image string) string {
	return `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: ` + image + `
        env:
        - name: DB_PASSWORD
          valueFrom:
            secretKeyRef: {name: db, key: password}
`
}

func TestHelp(t *testing.T) {
	code, out, _ := berth(t, nil, "--help")
	if code != exitOK || !strings.Contains(out, "plan") || !strings.Contains(out, "validate") {
		t.Errorf("--help: code %d, output:\n%s", code, out)
	}
	for _, cmd := range []string{"plan", "validate", "lab", "agent", "version"} {
		code, out, errOut := berth(t, nil, cmd, "--help")
		if code != exitOK || !strings.Contains(out, "Usage: berth "+cmd) || errOut != "" {
			t.Errorf("%s --help: code %d, stdout:\n%s\nstderr:\n%s", cmd, code, out, errOut)
		}
	}
	code, out, _ = berth(t, nil, "plan", "--help")
	if !strings.Contains(out, "--detailed-exitcode") || !strings.Contains(out, "Examples:") {
		t.Errorf("plan --help: code %d, output:\n%s", code, out)
	}
	if code, _, errOut := berth(t, nil, "agent", "--no-such-flag"); code != exitUsage || !strings.Contains(errOut, "no-such-flag") {
		t.Errorf("agent with a bad flag: code %d, stderr %s", code, errOut)
	}
	if code, _, errOut := berth(t, nil, "plant"); code != exitUsage || !strings.Contains(errOut, `unknown command "plant"`) {
		t.Errorf("unknown command: code %d, stderr %s", code, errOut)
	}
}

func TestPlanBetweenRevisions(t *testing.T) {
	repo := gittest.New(t)
	from := repo.Commit(map[string]string{"fleet/app.yaml": deployment("nginx:1.25"), "fleet/cm.yaml": configMap, "fleet/db.yaml": secretV1}, "first")
	to := repo.Commit(map[string]string{"fleet/app.yaml": deployment("nginx:1.26"), "fleet/db.yaml": secretV2}, "second")

	code, out, errOut := berth(t, nil, "plan", "--repo", repo.Path(), "--path", "fleet", "--from", from, "--to", to, "--detailed-exitcode")
	if code != exitChanges {
		t.Fatalf("code %d, want %d; stderr: %s\n%s", code, exitChanges, errOut, out)
	}
	for _, want := range []string{
		`~ spec.template.spec.containers[name=web].image: "nginx:1.25" → "nginx:1.26"`,
		"rolling update of 3 pods: maxSurge 1, maxUnavailable 0",
		"stringData[password]: (sensitive value)",
		"Plan: 0 to add, 2 to change, 0 to destroy.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plan output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("colour codes in output that is not a terminal")
	}

	code, out, _ = berth(t, map[string]string{"BERTH_REPO": repo.Path()}, "plan", "--path", "fleet", "--from", from, "--to", to, "-o", "json")
	if code != exitOK {
		t.Fatalf("json: code %d", code)
	}
	var plan struct {
		From, To string
		Changes  []struct{ Action, Kind, Name string }
		Summary  struct{ Add, Change, Destroy int }
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("json output: %v\n%s", err, out)
	}
	if plan.From != from || plan.To != to || plan.Summary.Change != 2 {
		t.Errorf("json plan %+v", plan)
	}

	for _, format := range []string{"text", "markdown", "json"} {
		_, out, _ := berth(t, nil, "plan", "--repo", repo.Path(), "--path", "fleet", "--from", "empty", "--to", to, "-o", format)
		_, diff, _ := berth(t, nil, "plan", "--repo", repo.Path(), "--path", "fleet", "--from", from, "--to", to, "-o", format)
		for _, secret := range []string{"hunter2", "aHVudGVyMi"} {
			if strings.Contains(out+diff, secret) {
				t.Errorf("%s output shows a secret value (%s)", format, secret)
			}
		}
	}

	code, out, _ = berth(t, nil, "plan", "--repo", repo.Path(), "--path", "fleet", "--from", to, "--to", to, "--detailed-exitcode")
	if code != exitOK || !strings.Contains(out, "No changes.") {
		t.Errorf("same revision: code %d\n%s", code, out)
	}
}

func TestPlanErrors(t *testing.T) {
	repo := gittest.New(t)
	from := repo.Commit(map[string]string{"app.yaml": deployment("nginx:1.25")}, "first")
	to := repo.Commit(map[string]string{"app.yaml": strings.Replace(deployment("nginx:1.25"), "replicas: 3", "replicas: three", 1)}, "broken")

	code, out, _ := berth(t, nil, "plan", "--repo", repo.Path(), "--from", from, "--to", to, "--detailed-exitcode")
	if code != exitError || !strings.Contains(out, `app.yaml:6:13: error: Deployment default/web: spec.replicas: expected an integer, got a string "three"`) {
		t.Errorf("broken revision: code %d\n%s", code, out)
	}
	// Planning away from the broken revision: its undecodable Deployment
	// counts as absent, which the plan says.
	fixed := repo.Commit(map[string]string{"app.yaml": deployment("nginx:1.25"), "db.yaml": secretV1}, "fixed")
	code, out, _ = berth(t, nil, "plan", "--repo", repo.Path(), "--from", to, "--to", fixed)
	if code != exitOK || !strings.Contains(out, ": 1 document(s) do not decode; their objects count as absent") || !strings.Contains(out, "+ Deployment default/web (created)") || strings.Contains(out, "-: note") {
		t.Errorf("from a broken revision: code %d\n%s", code, out)
	}
	if code, _, errOut := berth(t, nil, "plan", "--repo", repo.Path(), "--from", "no-such-branch"); code != exitError || !strings.Contains(errOut, "no-such-branch") {
		t.Errorf("unknown revision: code %d, stderr %s", code, errOut)
	}
	if code, _, errOut := berth(t, nil, "plan", "--repo", t.TempDir(), "--from", "HEAD~1"); code != exitError || !strings.Contains(errOut, "not a git repository") {
		t.Errorf("not a repository: code %d, stderr %s", code, errOut)
	}
	// Without --from the plan is against the machines; a broken revision
	// is refused before any is asked.
	if code, _, errOut := berth(t, nil, "plan", "--repo", repo.Path(), "--to", to); code != exitError || !strings.Contains(errOut, "app.yaml:6:13: error") {
		t.Errorf("live plan of a broken revision: code %d, stderr %s", code, errOut)
	}
	if code, _, _ := berth(t, nil, "plan", "--repo", repo.Path(), "--path", "fleet"); code != exitUsage {
		t.Errorf("--path without --from: code %d", code)
	}
	if code, _, _ := berth(t, nil, "plan", "--repo", repo.Path(), "--from", from, "-o", "yaml"); code != exitUsage {
		t.Errorf("bad -o: code %d", code)
	}
}

func TestValidate(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("ok/app.yaml", deployment("nginx:1.25")+"---\n"+secretV1)
	code, out, _ := berth(t, nil, "validate", filepath.Join(dir, "ok"))
	if code != exitOK || !strings.Contains(out, "2 objects, 0 errors") {
		t.Errorf("valid directory: code %d\n%s", code, out)
	}

	write("bad/app.yaml", deployment("nginx:1.25")+"---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports:\n  - port: 80\n    nodePort: 30080\n")
	code, out, _ = berth(t, nil, "validate", filepath.Join(dir, "bad"))
	wantFile := filepath.ToSlash(filepath.Join(dir, "bad", "app.yaml"))
	if code != exitError || !strings.Contains(out, wantFile+":") || !strings.Contains(out, `Secret "db" not found`) || !strings.Contains(out, "nodePort") {
		t.Errorf("invalid directory: code %d\n%s", code, out)
	}

	code, out, _ = berth(t, nil, "validate", "-o", "json", filepath.Join(dir, "bad"))
	var res struct {
		Valid       bool
		Diagnostics []struct{ Severity, File, Message string }
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || res.Valid || code != exitError || len(res.Diagnostics) == 0 {
		t.Errorf("json: code %d, err %v, %+v", code, err, res)
	}

	repo := gittest.New(t)
	repo.Commit(map[string]string{"deploy/app.yaml": deployment("nginx:1.25"), "deploy/db.yaml": secretV1}, "ok")
	repo.Commit(map[string]string{"deploy/app.yaml": "kind: [\n"}, "broken")
	if code, out, _ := berth(t, nil, "validate", "--repo", repo.Path(), "--rev", "HEAD~1", "deploy"); code != exitOK {
		t.Errorf("--rev HEAD~1: code %d\n%s", code, out)
	}
	if code, out, _ := berth(t, nil, "validate", "--repo", repo.Path(), "--rev", "HEAD", "deploy"); code != exitError || !strings.Contains(out, "deploy/app.yaml:") {
		t.Errorf("--rev HEAD: code %d\n%s", code, out)
	}
}

func TestExamplesValidate(t *testing.T) {
	for _, dir := range []string{"quickstart", "seed"} {
		code, out, _ := berth(t, nil, "validate", filepath.Join("..", "..", "examples", dir))
		errs := strings.Count(out, ": error: ")
		switch dir {
		case "quickstart":
			if code != exitOK || errs != 0 {
				t.Errorf("%s: code %d\n%s", dir, code, out)
			}
		case "seed":
			// The guide's web-app Deployment breaks the restricted Pod
			// Security Standard its own production namespace enforces.
			if errs != 1 || !strings.Contains(out, `Deployment production/web-app: spec.template.spec: pod-security: would violate PodSecurity "restricted:latest"`) {
				t.Errorf("%s: %d errors\n%s", dir, errs, out)
			}
		}
	}
}

// TestSeedPlans commits every document of the Kubernetes guide the project
// was created from (examples/seed) and plans it: from nothing, everything
// is created; against itself, nothing changes.
func TestSeedPlans(t *testing.T) {
	files := map[string]string{}
	seed := filepath.Join("..", "..", "examples", "seed")
	entries, err := os.ReadDir(seed)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(seed, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = string(b)
	}
	repo := gittest.New(t)
	rev := repo.Commit(files, "the guide")

	_, out, _ := berth(t, nil, "plan", "--repo", repo.Path(), "--from", "empty", "--to", rev, "-o", "json")
	var plan struct {
		Changes     []struct{ Action, Kind, Name string }
		Diagnostics []struct{ Severity, Message string }
		Summary     struct{ Add, Change, Destroy int }
	}
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	kinds := map[string]int{}
	for _, c := range plan.Changes {
		if c.Action != "create" {
			t.Errorf("%s %s: %s from nothing", c.Kind, c.Name, c.Action)
		}
		kinds[c.Kind]++
	}
	for _, k := range []string{"Pod", "Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "HorizontalPodAutoscaler",
		"Service", "Ingress", "NetworkPolicy", "ConfigMap", "Secret", "StorageClass", "PersistentVolumeClaim",
		"Role", "RoleBinding", "ClusterRole", "Namespace", "ServiceAccount", "Machine", "Cluster"} {
		if kinds[k] == 0 {
			t.Errorf("the seed's plan creates no %s", k)
		}
	}
	errs := 0
	for _, d := range plan.Diagnostics {
		if d.Severity == "error" {
			errs++
		}
	}
	if plan.Summary.Add != len(plan.Changes) || errs != 1 {
		t.Errorf("summary %+v for %d changes, %d errors (want only the web-app denial)", plan.Summary, len(plan.Changes), errs)
	}

	_, out, _ = berth(t, nil, "plan", "--repo", repo.Path(), "--from", rev, "--to", rev)
	if !strings.Contains(out, "No changes.") {
		t.Errorf("the seed planned against itself:\n%s", out)
	}
}
